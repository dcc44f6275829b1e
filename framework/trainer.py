"""The Trainer: model, optimizer, metrics and strategy, and the compiled train and eval steps.

Read `train_step` first: it is the whole optimisation step. `train_loop` runs it `num_steps` times
inside one `tf.function` call (so Python never sits between steps), `eval_loop` likewise over a
padded, weighted evaluation stream. Everything around the loop (checkpoints, evaluation schedule,
early stop, logs) is in controller.py.
"""

import keras
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import config as tf_config

from framework import lookahead, precision, schedules, seeds
from framework.config import TrainConfig

_ONLY_FIRST = tf.VariableAggregation.ONLY_FIRST_REPLICA
# What the step reports besides the task's metrics (whose `loss` is the data loss alone): means
# over a loop's steps. train_loop_end adds the LR of the loop's last step and, with fp16,
# LOSS_SCALE_METRICS.
STEP_METRICS = ("reg_loss", "grad_norm")
LOSS_SCALE_METRICS = ("loss_scale", "skipped_steps")  # the scale after the loop; steps it skipped


class Trainer:
    def __init__(
        self,
        *,
        config: TrainConfig,
        strategy: tf.distribute.Strategy,
        model_fn,
        optimizer_fn,
        task,
        total_steps: int,
        steps_per_fetch: int = 1,
    ):
        """`model_fn()` builds the Keras model; `optimizer_fn(learning_rate)` the optimizer.

        Both are called under `strategy.scope()` so their variables are mirrored across replicas.
        Each `next(iterator)` yields the batches of `steps_per_fetch` steps (input_pipeline.py).
        """
        self.config, self.strategy, self.task = config, strategy, task
        self.steps_per_fetch = steps_per_fetch
        self.global_batch_size = config.global_batch_size
        with strategy.scope():
            with precision.dtype_policy(config.mixed_precision):
                self.model = model_fn()
            self.step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="step", aggregation=_ONLY_FIRST
            )
            self.lr_scale = tf.Variable(
                1.0, trainable=False, name="lr_scale", aggregation=_ONLY_FIRST
            )
            self.learning_rate = schedules.Scaled(
                schedules.build_schedule(config, total_steps), self.lr_scale
            )
            self.optimizer = precision.wrap_optimizer(
                optimizer_fn(self.learning_rate), config.mixed_precision
            )
            # Create the slots now, eagerly: avoids "You must feed a value for placeholder" on the
            # first traced distributed step (keras#23085) and lets a checkpoint restore at once.
            self.optimizer.build(self.model.trainable_variables)
            self.lookahead = (
                lookahead.Lookahead(
                    self.model,
                    every=config.lookahead_every,
                    decay=config.lookahead_decay,
                    total_steps=total_steps,
                )
                if config.lookahead_every
                else None
            )
            _sum_gradients_in_the_step(self.optimizer)
            self.train_metrics = task.make_metrics()
            self.step_metrics = {name: keras.metrics.Mean(name=name) for name in STEP_METRICS}
            # fp16: the share of the steps since reset that were skipped.
            self.skipped_share = keras.metrics.Mean(name="skipped_share")
            self.eval_metrics = task.make_metrics()
        self.scales_loss = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)  # fp16
        self._steps_since_reset = 0
        # Seconds the loop spent waiting for `next(iterator)`, summed in-graph with tf.timestamp().
        with tf.device("/cpu:0"):
            self.input_wait_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.measures_input_wait = not _op_determinism_enabled()
        jit = config.jit_compile
        if jit and isinstance(strategy, tf.distribute.TPUStrategy):
            jit = False  # a TPU compiles every step with XLA anyway; jit_compile=True would nest it
            logging.info("--jit_compile: off on a TPU, which always compiles the step with XLA")
        self._replica_train_step = (
            tf.function(self._train_step_in_chunk, jit_compile=True)
            if jit
            else self._train_step_in_chunk
        )
        self._replica_eval_step = (
            tf.function(self.eval_step, jit_compile=True) if jit else self.eval_step
        )

    # ---------------------------------------------------------------- per replica
    def train_step(self, batch, step):
        """One optimisation step (number `step`) on this replica's share of the global batch."""
        seed = self._step_seed(step)  # for --augment, and for the model's layers that take one
        inputs, labels = self.task.prepare(
            batch, seed=seed if self.task.uses_seed else None, training=True
        )
        # The model's layers draw from another seed than the task's (unused, pruned, without them).
        model = seeds.call_with_step_seed(
            self.model, seeds.fold_in(seed, 1) if self.task.uses_seed else seed
        )

        # Forward pass. The mean is over the GLOBAL batch, so summing gradients over replicas gives
        # the global mean gradient. (Keras losses with their default reduction already divide by the
        # replica count inside a strategy since Keras 3.8: we take per-example losses and do it
        # once.)
        with tf.GradientTape() as tape:
            logits = self.task.forward(model, inputs, training=True)
            per_example_loss = self.task.loss(labels, logits)
            data_loss = tf.nn.compute_average_loss(
                per_example_loss, global_batch_size=self.global_batch_size
            )
            # Weight decay etc.: counted once per step, not per replica.
            reg_loss = self._regularization_loss()
            scaled_loss = self.optimizer.scale_loss(
                data_loss + tf.nn.scale_regularization_loss(reg_loss)
            )

        # Compute gradients, and sum them over replicas here rather than inside Keras (see
        # _sum_gradients_in_the_step): the norm is then the global gradient's, on every replica.
        grads = _all_reduce_sum(tape.gradient(scaled_loss, self.model.trainable_variables))
        grad_norm = _global_norm(grads) / self._loss_scale()  # read before the update may change it

        # Update weights. The fp16 LossScaleOptimizer unscales the gradients and skips the step if
        # they are not finite (the same decision on every replica: the gradients are already
        # summed).
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        self._after_update(step + 1)  # fp16 step count, lookahead
        self.task.update_metrics(self.train_metrics, labels, logits, per_example_loss)
        self._update_step_metrics(reg_loss=reg_loss, grad_norm=grad_norm, grads=grads)

    def _after_update(self, steps_done):
        # A skipped fp16 step still counts: the LR schedule follows the step count.
        if self.scales_loss:
            self.optimizer.iterations.assign(tf.cast(steps_done, self.optimizer.iterations.dtype))
        if (
            self.lookahead is not None
        ):  # inside the replicated step (one program on a TPU), see lookahead.py
            tf.distribute.get_replica_context().merge_call(
                lambda _: self.lookahead.maybe_update(steps_done)
            )

    def _regularization_loss(self):
        # In float32 before summing: under mixed precision a layer's loss may be bf16 or fp16.
        losses = [tf.cast(loss, tf.float32) for loss in self.model.losses]
        return tf.add_n(losses) if losses else tf.constant(0.0)

    def _loss_scale(self):
        return (
            tf.cast(self.optimizer.dynamic_scale, tf.float32)
            if self.scales_loss
            else tf.constant(1.0)
        )

    def _update_step_metrics(self, *, reg_loss, grad_norm, grads):
        # Every replica adds the same global values, so the sync-on-read mean is that value. A
        # skipped fp16 step (non-finite gradient) is left out of the mean norm, and counted.
        finite = tf.math.is_finite(grad_norm)
        self.step_metrics["grad_norm"].update_state(
            tf.where(finite, grad_norm, 0.0), sample_weight=tf.cast(finite, tf.float32)
        )
        self.step_metrics["reg_loss"].update_state(reg_loss)
        if self.scales_loss:  # the LossScaleOptimizer's own verdict, on the same summed gradients
            self.skipped_share.update_state(
                1.0 - tf.cast(self.optimizer.check_finite(grads), tf.float32)
            )

    def _train_step_in_chunk(self, chunk, j, step):
        return self.train_step(tf.nest.map_structure(lambda t: t[j], chunk), step)

    def _step_seed(self, step):
        # One seed function for the step and the host pipeline: reproducible, and replicas differ.
        return seeds.step_seed(
            self.config.seed, step, tf.distribute.get_replica_context().replica_id_in_sync_group
        )

    def eval_step(self, batch):
        """Metrics on one padded batch; `weight` is 0 on padding rows."""
        *data, weight = batch
        inputs, labels = self.task.prepare(data, seed=None, training=False)
        logits = self.task.forward(self.model, inputs, training=False)
        per_example_loss = self.task.loss(labels, logits)
        self.task.update_metrics(
            self.eval_metrics, labels, logits, per_example_loss, sample_weight=weight
        )

    # ---------------------------------------------------------------- compiled loops
    @tf.function
    def train_loop(self, iterator, num_steps, first_step):
        """`num_steps` train steps in one call, numbered from `first_step`; both must be tensors (a
        Python int retraces). The step numbers are loop counters on the host, not device reads."""
        fetch = self.steps_per_fetch
        for i in tf.range(num_steps // fetch):
            chunk = self._timed_next(iterator)  # the batches of `fetch` steps
            for j in tf.range(fetch, dtype=tf.int64):
                self.strategy.run(
                    self._replica_train_step, args=(chunk, j, first_step + i * fetch + j)
                )
        self.step.assign_add(num_steps)  # once per loop, not once per step

    def _timed_next(self, iterator):
        """next(iterator), adding the time it blocked to input_wait_seconds (two host
        timestamps)."""
        if not self.measures_input_wait:  # tf.timestamp is refused under op determinism
            return next(iterator)
        start = tf.timestamp()
        with tf.control_dependencies([start]):
            batch = next(iterator)
        arrived = [
            t
            for value in tf.nest.flatten(batch)
            for t in self.strategy.experimental_local_results(value)
        ]
        with tf.control_dependencies(arrived):
            self.input_wait_seconds.assign_add(tf.timestamp() - start)
        return batch

    @tf.function
    def eval_loop(self, iterator, num_steps):
        for _ in tf.range(num_steps):
            self.strategy.run(self._replica_eval_step, args=(next(iterator),))

    # ---------------------------------------------------------------- host side
    def run_train(self, iterator, num_steps: int) -> None:
        if num_steps % self.steps_per_fetch:
            raise ValueError(
                f"num_steps={num_steps} is not a multiple of steps_per_fetch={self.steps_per_fetch}"
            )
        first_step = int(self.step.numpy())  # once per loop (a checkpoint restore may have set it)
        self.train_loop(
            iterator, tf.constant(num_steps, tf.int64), tf.constant(first_step, tf.int64)
        )
        self._steps_since_reset += num_steps

    def evaluate(self, iterator, num_batches: int) -> dict[str, float]:
        """Metrics over one pass of an evaluation stream (`eval_dataset_fn`). Syncs with the
        device."""
        for metric in self.eval_metrics.values():
            metric.reset_state()
        self.eval_loop(iterator, tf.constant(num_batches, tf.int64))
        return read_metrics(self.eval_metrics)

    def take_input_wait(self) -> float:
        """Input-wait seconds since the last call; call it at loop boundaries (reads a variable)."""
        seconds = float(self.input_wait_seconds.numpy())
        self.input_wait_seconds.assign(0.0)
        return seconds

    def train_results(self) -> dict[str, float]:
        """Train metrics since the last reset. Reading them syncs with the device."""
        return {**read_metrics(self.train_metrics), **read_metrics(self.step_metrics)}

    def reset_train_metrics(self) -> None:
        for metric in (
            *self.train_metrics.values(),
            *self.step_metrics.values(),
            self.skipped_share,
        ):
            metric.reset_state()
        self._steps_since_reset = 0

    def train_loop_begin(self) -> None:
        """Eager, before a loop (Orbit's train_loop_begin): the loop's metrics start from zero."""
        self.reset_train_metrics()

    def train_loop_end(self) -> dict[str, float]:
        """Eager, after a loop: that loop's metrics (means over its steps). Syncs with the
        device."""
        results = {**self.train_results(), "learning_rate": self.last_learning_rate()}
        if self.scales_loss:
            results["loss_scale"] = float(self.optimizer.dynamic_scale.numpy())
            results["skipped_steps"] = round(
                float(self.skipped_share.result()) * self._steps_since_reset
            )
        return results

    def train_metric_names(self) -> tuple[str, ...]:
        return (
            *self.task.metric_names,
            *STEP_METRICS,
            "learning_rate",
            *(LOSS_SCALE_METRICS if self.scales_loss else ()),
        )

    def current_learning_rate(self) -> float:
        """The LR of the next step."""
        return float(self.learning_rate(self.optimizer.iterations))

    def last_learning_rate(self) -> float:
        """The LR of the last step (the schedule reads the optimizer's step count)."""
        return float(self.learning_rate(tf.maximum(self.optimizer.iterations - 1, 0)))

    def trace_counts(self) -> dict[str, int]:
        return {
            "train_loop": self.train_loop.experimental_get_tracing_count(),
            "eval_loop": self.eval_loop.experimental_get_tracing_count(),
        }


def _sum_gradients_in_the_step(optimizer) -> None:
    """Keras all-reduces the gradients inside apply_gradients; the step does it instead (to report
    the global gradient norm without a second all-reduce), so Keras' own sum must become the
    identity. Only on this instance, which optimizer_fn made for this trainer: do not hand it to
    Model.fit."""
    for opt in (
        optimizer,
        getattr(optimizer, "inner_optimizer", None),
    ):  # fp16: the LossScaleOptimizer's
        if opt is None:
            continue
        if not hasattr(
            opt, "_all_reduce_sum_gradients"
        ):  # a private Keras method: fail loudly if it goes
            raise RuntimeError(
                f"{type(opt).__name__} has no _all_reduce_sum_gradients (Keras changed?): "
                "Trainer cannot sum the gradients itself; pin keras==3.15.1"
            )
        opt._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)


def _all_reduce_sum(grads):
    """Sum over replicas (identity on one); None gradients (unused variables) stay None."""
    present = [g for g in grads if g is not None]
    summed = iter(
        tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, present)
        if present
        else []
    )
    return [None if g is None else next(summed) for g in grads]


def _global_norm(grads):
    return tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads if g is not None])


def _op_determinism_enabled() -> bool:
    # Process-wide once enabled (by any earlier run in this process); no public getter exists.
    return tf_config.is_op_determinism_enabled()


def read_metrics(metrics: dict[str, keras.metrics.Metric]) -> dict[str, float]:
    return {name: float(metric.result()) for name, metric in metrics.items()}
