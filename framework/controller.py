"""The outer loop: runs compiled loops of steps, and between them evaluates, checkpoints, logs and stops.

    state = restore() or fresh
    while step < total_steps:
        trainer.run_train(iterator, n)          # n steps on the device, one Python call
        read that loop's metrics (one sync)     # NaN/Inf check, log line, summaries
        actions after the loop                  # user hooks, profiler (framework/actions.py)
        at an evaluation: history row (the epoch's train means + eval metrics), then the actions:
                                                # best checkpoint, LR on plateau, target, early stop
        checkpoint when due; on SIGTERM/SIGINT checkpoint and stop
    final checkpoint, test evaluation, export, result.json

Train metrics are per loop (reset at each loop's start): the log line, TensorBoard and hooks see
that loop's means. History rows hold each epoch's means (EpochMeans, checkpointed with the loop state).
"""

import dataclasses
import math
import os
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from framework import actions, input_pipeline, outputs, profiling
from framework.checkpointing import Checkpointer
from framework.config import ConfigError, TrainConfig, parse_target
from framework.strategies import is_chief, worker_id


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT: a checkpoint was saved; the same command resumes."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


@dataclasses.dataclass
class Data:
    """In-memory arrays: `train` = (images, labels, ...); `evals` = {"val": (...), "test": (...)}; any of
    them may be an input_pipeline.StreamedSource instead (read from files while training)."""

    train: tuple
    evals: dict
    synthetic: bool = False
    host_fn: Callable | None = None  # augmentation in the tf.data map instead of on the device
    pipeline: dict = dataclasses.field(
        default_factory=dict
    )  # alternating_flip, num_parallel_calls, prefetch


@dataclasses.dataclass
class LoopInfo:
    """What a per-loop hook sees. A hook returning True stops the run (after a checkpoint)."""

    step: int
    epoch: int
    metrics: dict  # this loop's train metrics: means over its steps (trainer.train_loop_end)
    controller: "Controller"
    steps: int = 0  # steps in this loop
    seconds: float = 0.0  # wall time of this loop, device work included
    input_seconds: float = 0.0  # of which waiting for the next batch


class EpochMeans:
    """The current epoch's train metrics, host side, from each loop's means weighted by its steps
    (every step has the same global batch). Counts are summed; the loss scale and LR are the last
    loop's. Saved in each checkpoint, so a resumed run's history equals an uninterrupted run's."""

    SUMMED = ("skipped_steps",)
    LAST = ("loss_scale", "learning_rate")

    def __init__(self, state: dict | None = None):
        self.steps, self.sums = (state["steps"], dict(state["sums"])) if state else (0, {})

    def add(self, metrics: dict, steps: int) -> None:
        self.steps += steps
        for name, value in metrics.items():
            if name in self.LAST:
                self.sums[name] = value
            else:
                self.sums[name] = self.sums.get(name, 0) + (
                    value if name in self.SUMMED else value * steps
                )

    def means(self) -> dict:
        return {
            name: value if name in self.SUMMED + self.LAST else value / self.steps
            for name, value in self.sums.items()
        }

    @property
    def state(self) -> dict:
        return {"steps": self.steps, "sums": self.sums}


def default_monitor(metric_names: Sequence[str], eval_split: str) -> str:
    """`<split>_accuracy`, else the task's first *accuracy metric, else `<split>_loss`."""
    accuracies = [n for n in metric_names if n == "accuracy"] or [
        n for n in metric_names if n.endswith("accuracy")
    ]
    return f"{eval_split}_{accuracies[0] if accuracies else 'loss'}"


def check_metric_names(
    config: TrainConfig, train_names: Sequence[str], eval_names: Sequence[str]
) -> None:
    """--monitor and --target name a column of the history rows they are checked on; else ConfigError.
    Train metrics are bare (`loss`: the epoch's running mean over its steps), evaluations are
    <split>_<metric> (`test_accuracy`; `train_loss` is the training set evaluated, with --eval_splits=train)."""
    valid = [*train_names, *eval_names]
    for flag, text, name in (
        ("monitor", config.monitor, config.monitor),
        ("target", config.target, config.target and parse_target(config.target)[0]),
    ):
        if name and name not in valid:
            hint = ""
            if name.startswith("train_") and name[len("train_") :] in train_names:
                hint = (
                    f"; {name} is the training set evaluated (add train to --eval_splits), "
                    f"{name[len('train_') :]} the running mean of the epoch's train steps"
                )
            raise ConfigError(
                f"--{flag}={text!r}: {name!r} is not a metric of this run; valid names: "
                f"{', '.join(valid)} (train metrics bare, evaluations as <split>_<metric>){hint}"
            )


def eval_split_names(config: TrainConfig, data: "Data") -> list[str]:
    """The splits evaluated at each evaluation: --eval_splits (each in data.evals, or train), else val or test."""
    available = ["train", *data.evals]
    for split in config.eval_splits:
        if split not in available:
            raise ConfigError(
                f"--eval_splits={','.join(config.eval_splits)}: no split {split!r} in this run; "
                f"valid: {', '.join(available)}"
            )
    return list(config.eval_splits) or ["val" if "val" in data.evals else "test"]


def loop_lengths(config: TrainConfig, steps_per_epoch: int, total_steps: int) -> dict[str, int]:
    """What loops end at (multiples of): steps_per_loop, epoch ends, the last step, checkpoints and
    profile boundaries. A fetch of several steps must divide every one (run.steps_per_fetch)."""
    lengths = {
        "steps_per_loop": config.steps_per_loop,
        "steps per epoch": steps_per_epoch,
        "total steps": total_steps,
        "checkpoint_every": config.checkpoint_every,
    }
    for i, boundary in enumerate(config.profile_steps.split(",") if config.profile_steps else ()):
        lengths[f"profile step {i + 1}"] = int(boundary)
    return lengths


def loop_plan(
    config: TrainConfig, data: Data, steps_per_epoch: int, total_steps: int, steps_per_fetch: int
) -> str:
    """The info line on loop and fetch sizes, and why steps_per_fetch is 1 when it is forced to 1."""
    per_loop = min(config.steps_per_loop, steps_per_epoch, total_steps)
    line = (
        f"loops of up to {per_loop} steps per compiled call (--steps_per_loop={config.steps_per_loop}, "
        f"{steps_per_epoch} steps per epoch, {total_steps} in all); steps_per_fetch: {steps_per_fetch}"
    )
    if config.steps_per_fetch:
        return f"{line} (set by --steps_per_fetch)"
    if steps_per_fetch > 1:
        return f"{line} (automatic)"
    lengths = loop_lengths(config, steps_per_epoch, total_steps)
    common = math.gcd(*lengths.values())
    if data.host_fn is not None:
        why = "host augmentation maps one batch at a time in tf.data"
    elif common == 1:
        why = (
            f"loops end at multiples of {', '.join(f'{k} {v}' for k, v in lengths.items() if v)}, whose "
            "greatest common divisor is 1, and a fetch must not straddle two loops; a --steps_per_loop "
            f"that divides {steps_per_epoch} (and --train_steps a multiple of it) allows more"
        )
    else:
        why = "one global batch is too large for a fetch of several (framework.run.steps_per_fetch's byte cap)"
    return f"{line} (forced to 1: {why})"


class Controller:
    def __init__(
        self,
        trainer,
        data: Data,
        config: TrainConfig,
        *,
        hooks: Sequence[Callable] = (),
        eval_hooks: Sequence[Callable] = (),
        run_config: dict | None = None,
    ):
        """`hooks(LoopInfo)` run after every loop (True stops); `eval_hooks(actions.Row)` after every
        history row, on the chief only, for outputs such as live plots."""
        self.trainer, self.data, self.config = trainer, data, config
        self.strategy = trainer.strategy
        self.hooks = list(hooks)
        self.eval_hooks = list(eval_hooks)
        self.run_config = run_config or config.to_dict()
        self.chief = is_chief(self.strategy)
        self.steps_per_epoch = input_pipeline.steps_per_epoch(
            input_pipeline.num_examples(data.train), config.global_batch_size
        )
        self.total_steps = config.train_steps or config.epochs * self.steps_per_epoch
        self.eval_splits = eval_split_names(config, data)
        # The split the default monitor watches: val, else test, else the first evaluated.
        self.eval_split = next(
            (s for s in ("val", "test") if s in self.eval_splits), self.eval_splits[0]
        )
        # Checked on the history rows: the train metrics' epoch means and the evaluation splits' metrics.
        check_metric_names(
            config,
            trainer.train_metric_names(),
            [f"{split}_{name}" for split in self.eval_splits for name in trainer.task.metric_names],
        )
        self.monitor_name = config.monitor or default_monitor(
            trainer.task.metric_names, self.eval_split
        )
        self.writer = outputs.RunWriter(config.model_dir, enabled=self.chief)
        self.checkpointer = (
            Checkpointer(
                trainer,
                os.path.join(config.model_dir, "checkpoints"),
                max_to_keep=config.keep_checkpoints,
                is_chief=self.chief,
                worker_id=worker_id(self.strategy),
            )
            if config.model_dir
            else None
        )
        self.best_checkpointer = (
            Checkpointer(
                trainer,
                os.path.join(config.model_dir, "best"),
                max_to_keep=1,
                is_chief=self.chief,
                worker_id=worker_id(self.strategy),
            )
            if config.model_dir
            else None
        )
        self.signals = actions.Signals(self.strategy)
        self.profile = actions.Profile(
            profiling.parse_profile_steps(config.profile_steps),
            config.model_dir if self.chief else None,
        )
        self.actions = self._make_actions()
        self.epoch_means = EpochMeans()
        self.history: dict[str, list] = {}
        self.result: dict = {}
        self._eval_iterators = {}
        self._predict_batch = None  # compiled on first use (predict)
        self._last_eval = (-1, {})  # (step, {split: metrics}) of the last evaluation
        self._loop_seconds = 0.0  # time inside train loops, over all sessions of this run
        self._elapsed_before = 0.0  # wall time of earlier sessions (before a resume)
        self._session_start = time.time()
        self._last_summary = 0.0
        self._rate = None  # steps/s, smoothed, for the ETA
        # Train-loop seconds and input-wait seconds of this session, for input_profile: the loops that
        # traced train_loop apart, since tracing is neither step nor input time.
        self._wait_and_loop_seconds = {"traced": [0.0, 0.0], "compiled": [0.0, 0.0]}

    def _make_actions(self) -> list[actions.Action]:
        """The policies, in the order they run after a loop and after an evaluation."""
        config, monitor = self.config, self.monitor_name
        found = [
            self.profile,
            actions.Hooks(self.hooks),
            self.signals,
            actions.BestCheckpoint(monitor, self._save_best if self.best_checkpointer else None),
        ]
        if config.reduce_lr_patience:
            found.append(
                actions.ReduceLROnPlateau(
                    monitor,
                    patience=config.reduce_lr_patience,
                    factor=config.reduce_lr_factor,
                    min_lr=config.min_lr,
                    base_lr=config.learning_rate,
                    lr_scale=self.trainer.lr_scale,
                )
            )
        if config.target:
            found.append(actions.Target(config.target))
        if config.early_stopping_patience:
            found.append(actions.EarlyStopping(monitor, patience=config.early_stopping_patience))
        if config.export and self.writer.model_dir:
            found.append(actions.Export(self.trainer.model, self.writer))
        return found

    # ---------------------------------------------------------------- public
    def run(self) -> dict:
        """Train to the end (or a stop), then evaluate on test and write result.json. Returns it."""
        start = self._session_start = time.time()
        start_step = self._restore()
        if start_step:
            logging.info("resumed from %s at step %d", self.checkpointer.latest, start_step)
        outputs.log_model_summary(self.trainer.model)
        logging.info(
            loop_plan(
                self.config,
                self.data,
                self.steps_per_epoch,
                self.total_steps,
                self.trainer.steps_per_fetch,
            )
        )
        iterator = iter(
            self.strategy.distribute_datasets_from_function(self._train_dataset_fn(start_step))
        )
        if self.config.eval_at_start and start_step == 0 and not self.history:
            self._evaluate_at_start()
        # A run that early-stopped or hit its target stays stopped when resumed; a hook's stop is a pause.
        if self.result.get("stop_reason") not in ("early_stopping", "target"):
            self.result.pop("stop_reason", None)
            with self.signals.caught():
                try:
                    self.result["stop_reason"] = self._train(iterator, start_step)
                finally:
                    self.profile.close()
        return self._finish(start)

    def evaluate(self, split: str) -> dict[str, float]:
        """`<split>_<metric>` over one pass of a split of data.evals, or of the training set ("train")."""
        if split not in self._eval_iterators:
            fn, num_batches = self._eval_dataset_fn(split)
            iterator = iter(self.strategy.distribute_datasets_from_function(fn))
            self._eval_iterators[split] = (iterator, num_batches)
        iterator, num_batches = self._eval_iterators[split]
        return {f"{split}_{k}": v for k, v in self.trainer.evaluate(iterator, num_batches).items()}

    def predict(self, split: str) -> dict[str, np.ndarray]:
        """What the model says on every example of a split, in the split's order, from one pass of its
        evaluation stream (the eval step's prepare and forward: TTA and eval transforms included):
        `logits` [N, ...] (float32), `labels` [N, ...] and `indices` [N] (each row's position in the split;
        an example a streamed source could not read is left out). Run it on every worker."""
        if self._predict_batch is None:
            self._predict_batch = self._make_predict_batch()
        fn, num_batches = self._eval_dataset_fn(split)
        iterator = iter(self.strategy.distribute_datasets_from_function(fn))
        parts = [[t.numpy() for t in self._predict_batch(iterator)] for _ in range(num_batches)]
        logits, labels, weight = (np.concatenate(column) for column in zip(*parts))
        kept = weight > 0  # padding rows (and unreadable examples) have weight 0
        return {"logits": logits[kept], "labels": labels[kept], "indices": np.nonzero(kept)[0]}

    # ---------------------------------------------------------------- the loop
    def _train(self, iterator, step: int) -> str:
        """Loops until the last step or a stop; returns the stop reason."""
        while step < self.total_steps:
            epoch_end = (step // self.steps_per_epoch + 1) * self.steps_per_epoch
            loop_end = self._loop_end(step, epoch_end)
            for action in self.actions:
                action.before_loop(step)
            info = self._run_loop(iterator, step, loop_end)  # with its log line and summaries
            step = loop_end
            self.epoch_means.add(info.metrics, info.steps)
            stops = [
                action.after_loop(info) for action in self.actions
            ]  # every action sees every loop
            if self._evaluation_due(step, epoch_end):
                stops.insert(
                    0, self._evaluate_and_decide(step, info.epoch)
                )  # target/early stop over a hook
            if step == epoch_end:
                self.epoch_means = EpochMeans()
            stop = next((reason for reason in stops if reason), None)
            if stop:
                self.result["stop_reason"] = (
                    stop  # saved with the checkpoint: a resume knows it stopped
                )
            if self._checkpoint_due(step, epoch_end) or stop or self.signals.decided:
                self._save(step)
            if self.signals.decided:
                raise self._interrupted(step)
            if stop:
                return stop
        return "completed"

    def _loop_end(self, step: int, epoch_end: int) -> int:
        """Loops end at steps_per_loop, the epoch's end, the last step, checkpoints and profile boundaries."""
        loop_end = min(step + self.config.steps_per_loop, epoch_end, self.total_steps)
        if self.config.checkpoint_every:
            every = self.config.checkpoint_every
            loop_end = min(loop_end, (step // every + 1) * every)
        return min([loop_end] + [b for b in self.profile.boundaries() if b > step])

    def _run_loop(self, iterator, step: int, loop_end: int) -> LoopInfo:
        """One compiled loop of steps (step, loop_end]; its metrics, the log line and the summaries."""
        trainer, loop_steps = self.trainer, loop_end - step
        traces = trainer.trace_counts()["train_loop"]
        trainer.train_loop_begin()
        t0 = time.time()
        trainer.run_train(iterator, loop_steps)
        metrics = trainer.train_loop_end()  # host-device sync point: the loop's work is done
        seconds = time.time() - t0
        input_seconds = trainer.take_input_wait()
        self._loop_seconds += seconds
        kind = "compiled" if trainer.trace_counts()["train_loop"] == traces else "traced"
        self._wait_and_loop_seconds[kind][0] += input_seconds
        self._wait_and_loop_seconds[kind][1] += seconds
        if not all(math.isfinite(v) for v in metrics.values()):
            self._stop_on_non_finite(step, loop_end, metrics)
        info = LoopInfo(
            loop_end,
            math.ceil(loop_end / self.steps_per_epoch),
            metrics,
            self,
            loop_steps,
            seconds,
            input_seconds,
        )
        self._log_loop(info)
        return info

    def _loop_bound(self, info: LoopInfo) -> str:
        """This loop's verdict (profiling.classify), for the loop line: input-bound runs say so there."""
        if not hasattr(self, "_host_cpu"):
            self._host_cpu = profiling.step_on_host_cpu(self.strategy)
        return profiling.classify(
            info.input_seconds / info.seconds, step_on_host_cpu=self._host_cpu
        )

    def _log_loop(self, info: LoopInfo) -> None:
        step, seconds = info.step, info.seconds
        self._rate = (
            info.steps / seconds
            if self._rate is None
            else 0.7 * self._rate + 0.3 * info.steps / seconds
        )
        examples_per_sec = info.steps * self.config.global_batch_size / seconds
        self.writer.loop_line(
            step=step,
            total=self.total_steps,
            epoch=info.epoch,
            metrics=info.metrics,
            examples_per_sec=examples_per_sec,
            input_fraction=info.input_seconds / seconds,
            eta_seconds=(self.total_steps - step) / self._rate,
            bound=self._loop_bound(info),
        )
        # At most one train summary a second (and at every epoch end): each write costs memory
        # that the soak benchmark saw grow when loops of a small model ran 20 times a second.
        if (
            time.time() - self._last_summary >= 1.0
            or step % self.steps_per_epoch == 0
            or step == self.total_steps
        ):
            self._last_summary = time.time()
            self.writer.scalars(
                "train",
                step,
                {
                    **info.metrics,
                    "examples_per_sec": examples_per_sec,
                    "input_wait_fraction": info.input_seconds / seconds,
                    "step_seconds": (seconds - info.input_seconds) / info.steps,
                },
            )

    def _evaluation_due(self, step: int, epoch_end: int) -> bool:
        every = self.config.eval_every_epochs
        return (
            step == self.total_steps
            or step == epoch_end
            and every
            and (step // self.steps_per_epoch) % every == 0
        )

    def _evaluate_splits(self, step: int) -> dict[str, float]:
        """Every split of --eval_splits, logged and summarised; the final evaluation reuses them if
        nothing trained since."""
        by_split = {split: self.evaluate(split) for split in self.eval_splits}
        self._last_eval = (step, by_split)
        eval_metrics = {k: v for metrics in by_split.values() for k, v in metrics.items()}
        self.writer.eval_line(step, eval_metrics)
        self.writer.scalars("eval", step, eval_metrics)
        return eval_metrics

    def _add_history_row(self, row: dict) -> actions.Row:
        """Appends the row to history.json's columns, which stay of equal length (None where a row has
        no value: the train metrics of the step-0 row), then runs the eval hooks on it."""
        rows = len(self.history.get("step", ()))
        for key in [*self.history, *(k for k in row if k not in self.history)]:
            self.history.setdefault(key, [None] * rows).append(row.get(key))
        self.writer.write_json("history.json", self.history)
        elapsed = self._elapsed_before + time.time() - self._session_start
        decision = actions.Row(row["step"], row, elapsed, self.result)
        if self.chief:
            for hook in self.eval_hooks:
                hook(decision)
        return decision

    def _evaluate_at_start(self) -> None:
        """--eval_at_start: the untrained model's row, epoch 0 (no train metrics; no action acts on it)."""
        self._add_history_row(
            {
                "epoch": 0,
                "step": 0,
                **self._evaluate_splits(0),
                "wall_seconds": time.time() - self._session_start,
            }
        )

    def _evaluate_and_decide(self, step: int, epoch: int) -> str | None:
        """Evaluate, write the history row, then the actions decide on it. Returns a stop reason or None."""
        eval_metrics = self._evaluate_splits(step)
        decision = self._add_history_row(
            {
                "epoch": epoch,
                "step": step,
                **self.epoch_means.means(),
                **eval_metrics,
                "wall_seconds": time.time() - self._session_start,
            }
        )
        for action in self.actions:
            reason = action.after_eval(decision)
            if reason:
                return reason
        return None

    def _finish(self, start: float) -> dict:
        wall_seconds = self._elapsed_before + time.time() - start
        final = {}
        step = int(self.trainer.step.numpy())
        last_step, last_metrics = self._last_eval
        for split in sorted({*self.data.evals, *self.eval_splits}):
            final.update(
                last_metrics[split]
                if last_step == step and split in last_metrics
                else self.evaluate(split)
            )
        counts = outputs.parameter_counts(self.trainer.model)
        self.result.update(
            {
                **final,
                "train_steps": step,
                "epochs": step / self.steps_per_epoch,
                # Training throughput: time inside train loops only (evaluation and checkpoints excluded).
                "examples_per_sec": step
                * self.config.global_batch_size
                / max(self._loop_seconds, 1e-9),
                "wall_seconds": wall_seconds,
                **self.input_profile(),
                "strategy": self.config.strategy,
                "num_replicas": self.strategy.num_replicas_in_sync,
                **counts,
                "weights_fingerprint": weights_fingerprint(self.trainer.model),
                "history_file": self.writer.path("history.json"),
                "config": self.run_config,
            }
        )
        for action in self.actions:  # the export
            action.finish(self.result)
        self.writer.write_json("result.json", self.result)
        self.writer.close()
        logging.info("done | %s | %s", outputs.format_metrics(final), f"{wall_seconds:.1f}s")
        return self.result

    def input_profile(self) -> dict:
        """Input wait versus step time over this session's train loops."""
        if not self.trainer.measures_input_wait:
            return {"input_wait_fraction": None, "bound": "not measured (--deterministic)"}
        # The loops that ran already compiled; the tracing loop only when no other ran (a short run).
        wait, loop = self._wait_and_loop_seconds["compiled"]
        if not loop:
            wait, loop = self._wait_and_loop_seconds["traced"]
        fraction = wait / max(loop, 1e-9)
        bound = profiling.classify(
            fraction, step_on_host_cpu=profiling.step_on_host_cpu(self.strategy)
        )
        return {
            "input_wait_fraction": fraction,
            "bound": bound,
            "input_wait_seconds": wait,
            "train_loop_seconds": loop,
        }

    # ---------------------------------------------------------------- helpers
    def _eval_dataset_fn(self, split: str):
        source = (
            self.data.train
            if split == "train" and "train" not in self.data.evals
            else self.data.evals[split]
        )
        return input_pipeline.eval_dataset_fn(
            source, global_batch_size=self.config.eval_batch_size or self.config.global_batch_size
        )

    def _make_predict_batch(self):
        """A compiled call: one evaluation batch -> (logits, labels, weight) of the global batch, in row order
        (strategy.gather concatenates the replicas' slices, which are consecutive rows)."""
        task, model, strategy = self.trainer.task, self.trainer.model, self.strategy

        def replica_step(batch):
            *parts, weight = batch
            inputs, labels = task.prepare(parts, seed=None, training=False)
            return task.forward(model, inputs, training=False), labels, weight

        if self.config.jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
            replica_step = tf.function(
                replica_step, jit_compile=True
            )  # the same logits as the eval step

        @tf.function
        def predict_batch(iterator):
            outputs = strategy.run(replica_step, args=(next(iterator),))
            return tuple(strategy.gather(t, axis=0) for t in outputs)

        return predict_batch

    def _train_dataset_fn(self, start_step):
        data, config = self.data, self.config
        if data.synthetic:
            return input_pipeline.synthetic_dataset_fn(
                data.train,
                global_batch_size=config.global_batch_size,
                seed=config.seed,
                steps_per_fetch=self.trainer.steps_per_fetch,
            )
        if (
            config.data_service
        ):  # the same batches, made by the tf.data service's workers (their order is not)
            from framework import data_service

            logging.info(
                "training input: tf.data service at %s, steps %d-%d",
                config.data_service,
                start_step + 1,
                self.total_steps,
            )
            return data_service.train_dataset_fn(
                data.train,
                config.data_service,
                global_batch_size=config.global_batch_size,
                seed=config.seed,
                start_step=start_step,
                stop_step=self.total_steps,
                steps_per_fetch=self.trainer.steps_per_fetch,
                host_fn=data.host_fn,
                **data.pipeline,
            )
        return input_pipeline.train_dataset_fn(
            data.train,
            global_batch_size=config.global_batch_size,
            seed=config.seed,
            start_step=start_step,
            steps_per_fetch=self.trainer.steps_per_fetch,
            host_fn=data.host_fn,
            **data.pipeline,
        )

    def _restore(self) -> int:
        state = self.checkpointer.restore() if self.checkpointer else None
        if state:
            self.history = state["history"]
            self.result = state["result"]
            for action in self.actions:
                if action.name in state["controls"]:
                    action.load(state["controls"][action.name])
            self.epoch_means = EpochMeans(
                state.get("epoch_means")
            )  # absent in checkpoints before it
            self.writer.write_json("history.json", self.history)
            self._loop_seconds, self._elapsed_before = (
                state["loop_seconds"],
                state["elapsed_seconds"],
            )
        return int(self.trainer.step.numpy())

    def _loop_state(self) -> dict:
        controls = {action.name: action.state for action in self.actions if action.name}
        return {
            "history": self.history,
            "result": self.result,
            "controls": controls,
            "epoch_means": self.epoch_means.state,
            "loop_seconds": self._loop_seconds,
            "elapsed_seconds": self._elapsed_before + time.time() - self._session_start,
        }

    def _checkpoint_due(self, step, epoch_end) -> bool:
        if step == self.total_steps:
            return True
        if self.config.checkpoint_every:
            return step % self.config.checkpoint_every == 0
        return step == epoch_end

    def _save(self, step):
        if self.checkpointer:
            self.checkpointer.save(step, self._loop_state())

    def _interrupted(self, step) -> "TrainingInterrupted":
        where = self.checkpointer.directory if self.checkpointer else "(no --model_dir)"
        return TrainingInterrupted(
            f"stopped by signal {self.signals.decided} at step {step}; checkpoint saved "
            f"in {where}: run the same command to resume",
            self.signals.decided,
        )

    def _save_best(self, step):
        self.best_checkpointer.save(step, self._loop_state())

    def _stop_on_non_finite(self, first, last, metrics):
        kept = self.checkpointer.latest if self.checkpointer else None
        self.result["stop_reason"] = "non_finite_loss"
        raise NonFiniteLossError(
            f"non-finite training metrics {outputs.format_metrics(metrics)} between step {first + 1} and "
            f"step {last}; stopped without saving. Last good checkpoint: {kept or 'none'}. Try a lower "
            "--learning_rate, warm-up, or --mixed_precision=none"
        )


def weights_fingerprint(model) -> float:
    """A cheap summary of all weights, for logs and multi-worker agreement checks."""
    return float(sum(np.sum(np.abs(v.numpy().astype(np.float64))) for v in model.weights))
