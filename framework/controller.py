"""The outer loop: runs compiled loops of steps, and between them evaluates, checkpoints, logs and
stops.

    state = restore() or fresh
    while step < total_steps:
        trainer.run_train(iterator, n)          # n steps on the device, one Python call
        read that loop's metrics (one sync)     # NaN/Inf check, log line, summaries
        actions after the loop                  # user hooks, Keras callbacks' batch end, profiler
        at an evaluation: history row (the epoch's train means + eval metrics), then the actions:
                                                # best checkpoint, LR on plateau, target, early stop
        at an epoch's end: the Keras callbacks' on_epoch_end (framework/callbacks.py)
        checkpoint when due; on SIGTERM/SIGINT checkpoint and stop
    final checkpoint, test evaluation, export, result.json, TensorBoard HParams
    (framework/hparams.py)

Train metrics are per loop (reset at each loop's start): the log line, TensorBoard and hooks see
that loop's means. History rows hold each epoch's means (EpochMeans, checkpointed with the loop
state).
"""

import math
import os
import time
from typing import Callable, Sequence

import numpy as np
from absl import logging

from framework import (
    actions,
    hparams,
    input_pipeline,
    outputs,
    predictions,
    profiling,
    run_inputs,
)
from framework import callbacks as user_callbacks
from framework.checkpointing import Checkpointer
from framework.config import TrainConfig
from framework.loops import (  # noqa: F401 (Data, LoopInfo, loop_lengths: framework.controller's names)
    Data,
    EpochMeans,
    LoopInfo,
    check_metric_names,
    default_monitor,
    eval_split_names,
    loop_lengths,
    loop_plan,
)
from framework.strategies import is_chief, worker_id


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT: a checkpoint was saved; the same command resumes."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


class Controller:
    def __init__(
        self,
        trainer,
        data: Data,
        config: TrainConfig,
        *,
        hooks: Sequence[Callable] = (),
        eval_hooks: Sequence[Callable] = (),
        callbacks: Sequence = (),
        run_config: dict | None = None,
    ):
        """`hooks(LoopInfo)` run after every loop (True stops); `eval_hooks(actions.Row)` after
        every history row, on the chief only, for outputs such as live plots; `callbacks`: Keras
        callbacks, with config.callbacks' (framework/callbacks.py), on every worker."""
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
        # Checked on the history rows: the train metrics' epoch means and the evaluation splits'
        # metrics.
        eval_names = [f"{s}_{name}" for s in self.eval_splits for name in trainer.task.metric_names]
        check_metric_names(config, trainer.train_metric_names(), eval_names)
        callbacks = [
            *callbacks,
            *(user_callbacks.load(config.callbacks) if config.callbacks else ()),
        ]
        user_callbacks.check(callbacks, log_names=[*trainer.train_metric_names(), *eval_names])
        self.monitor_name = config.monitor or default_monitor(
            trainer.task.metric_names, self.eval_split
        )
        self.writer = outputs.RunWriter(config.model_dir, enabled=self.chief)
        self.checkpointer = self._checkpointer("checkpoints", config.keep_checkpoints)
        self.best_checkpointer = self._checkpointer("best", 1)
        self.signals = actions.Signals(self.strategy)
        self.profile = actions.Profile(
            profiling.parse_profile_steps(config.profile_steps),
            config.model_dir if self.chief else None,
        )
        self.callbacks = user_callbacks.KerasCallbacks(
            callbacks,
            model=trainer.model,
            optimizer=trainer.optimizer,
            steps_per_epoch=self.steps_per_epoch,
            total_steps=self.total_steps,
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
        self.report = outputs.LoopReport(
            self.writer,
            self.strategy,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            batch=config.global_batch_size,
        )

    def _checkpointer(self, folder: str, max_to_keep: int) -> Checkpointer | None:
        if not self.config.model_dir:
            return None
        return Checkpointer(
            self.trainer,
            os.path.join(self.config.model_dir, folder),
            max_to_keep=max_to_keep,
            is_chief=self.chief,
            worker_id=worker_id(self.strategy),
        )

    def _make_actions(self) -> list[actions.Action]:
        """The policies, in the order they run after a loop and after an evaluation."""
        config, monitor = self.config, self.monitor_name
        found = [
            self.profile,
            actions.Hooks(self.hooks),
            self.callbacks,
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
            self.strategy.distribute_datasets_from_function(
                run_inputs.train_dataset_fn(
                    self.data,
                    self.config,
                    start_step=start_step,
                    stop_step=self.total_steps,
                    steps_per_fetch=self.trainer.steps_per_fetch,
                )
            )
        )
        if self.config.eval_at_start and start_step == 0 and not self.history:
            self._evaluate_at_start()
        # A run that early-stopped (ours or a callback's) or hit its target stays stopped when
        # resumed; a hook's stop is a pause.
        if self.result.get("stop_reason") not in ("early_stopping", "target", "callback"):
            self.result.pop("stop_reason", None)
            with self.signals.caught():
                self.callbacks.train_begin(resumed=start_step > 0)
                try:
                    self.result["stop_reason"] = self._train(iterator, start_step)
                    self.callbacks.train_end()
                finally:
                    self.profile.close()
                    self.callbacks.close()
        return self._finish(start)

    def evaluate(self, split: str) -> dict[str, float]:
        """`<split>_<metric>` over one pass of a split of data.evals, or of the training set
        ("train")."""
        if split not in self._eval_iterators:
            fn, num_batches = run_inputs.eval_dataset_fn(self.data, self.config, split)
            iterator = iter(self.strategy.distribute_datasets_from_function(fn))
            self._eval_iterators[split] = (iterator, num_batches)
        iterator, num_batches = self._eval_iterators[split]
        return {f"{split}_{k}": v for k, v in self.trainer.evaluate(iterator, num_batches).items()}

    def predict(self, split: str) -> dict[str, np.ndarray]:
        """`logits`, `labels` and `indices` of every example of a split
        (framework/predictions.py)."""
        if self._predict_batch is None:
            self._predict_batch = predictions.make_predict_batch(
                self.trainer, self.config.jit_compile
            )
        fn, num_batches = run_inputs.eval_dataset_fn(self.data, self.config, split)
        iterator = iter(self.strategy.distribute_datasets_from_function(fn))
        return predictions.predict(self._predict_batch, iterator, num_batches)

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
            stops = [action.after_loop(info) for action in self.actions]  # each sees every loop
            if self._evaluation_due(step, epoch_end):  # target/early stop over a hook
                stops.insert(0, self._evaluate_and_decide(step, info.epoch))
            if step in (epoch_end, self.total_steps):  # the callbacks' epoch ends
                last_step, by_split = self._last_eval
                evaluated = {k: v for m in by_split.values() for k, v in m.items()}
                logs = {**self.epoch_means.means(), **(evaluated if last_step == step else {})}
                stops.append(self.callbacks.epoch_end(logs))
            if step == epoch_end:
                self.epoch_means = EpochMeans()
            stop = next((reason for reason in stops if reason), None)
            if stop:  # saved with the checkpoint: a resume knows it stopped
                self.result["stop_reason"] = stop
            if self._checkpoint_due(step, epoch_end) or stop or self.signals.decided:
                self._save(step)
            if self.signals.decided:
                raise self._interrupted(step)
            if stop:
                return stop
        return "completed"

    def _loop_end(self, step: int, epoch_end: int) -> int:
        """Loops end at steps_per_loop, the epoch's end, the last step, checkpoints and profile
        boundaries."""
        loop_end = min(step + self.config.steps_per_loop, epoch_end, self.total_steps)
        if self.config.checkpoint_every:
            every = self.config.checkpoint_every
            loop_end = min(loop_end, (step // every + 1) * every)
        return min([loop_end] + [b for b in self.profile.boundaries() if b > step])

    def _run_loop(self, iterator, step: int, loop_end: int) -> LoopInfo:
        """One compiled loop of steps (step, loop_end]; its metrics, the log line and the
        summaries."""
        trainer, loop_steps = self.trainer, loop_end - step
        traces = trainer.trace_counts()["train_loop"]
        trainer.train_loop_begin()
        t0 = time.time()
        trainer.run_train(iterator, loop_steps)
        metrics = trainer.train_loop_end()  # host-device sync point: the loop's work is done
        seconds = time.time() - t0
        input_seconds = trainer.take_input_wait()
        self._loop_seconds += seconds
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
        self.report.add(info, traced=trainer.trace_counts()["train_loop"] != traces)
        return info

    def _evaluation_due(self, step: int, epoch_end: int) -> bool:
        every = self.config.eval_every_epochs
        return (
            step == self.total_steps
            or step == epoch_end
            and every
            and (step // self.steps_per_epoch) % every == 0
        )

    def _evaluate_splits(self, step: int, *, callbacks: bool = True) -> dict[str, float]:
        """Every split of --eval_splits, logged and summarised; the final evaluation reuses them if
        nothing trained since."""
        by_split = {}
        for split in self.eval_splits:
            if callbacks:
                self.callbacks.test_begin()
            by_split[split] = self.evaluate(split)
            if callbacks:
                self.callbacks.test_end(split, by_split[split])
        self._last_eval = (step, by_split)
        eval_metrics = {k: v for metrics in by_split.values() for k, v in metrics.items()}
        self.writer.eval_line(step, eval_metrics)
        self.writer.scalars("eval", step, eval_metrics)
        return eval_metrics

    def _add_history_row(self, row: dict) -> actions.Row:
        """Appends the row to history.json's columns, which stay of equal length (None where a row
        has no value: the train metrics of the step-0 row), then runs the eval hooks on it."""
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
        """--eval_at_start: the untrained model's row, epoch 0 (no train metrics; no action acts on
        it)."""
        self._add_history_row(
            {
                "epoch": 0,
                "step": 0,
                **self._evaluate_splits(0, callbacks=False),
                "wall_seconds": time.time() - self._session_start,
            }
        )

    def _evaluate_and_decide(self, step: int, epoch: int) -> str | None:
        """Evaluate, write the history row, then the actions decide on it. Returns a stop reason or
        None."""
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
                # Training throughput: time inside train loops only (evaluation and checkpoints
                # excluded).
                "examples_per_sec": step
                * self.config.global_batch_size
                / max(self._loop_seconds, 1e-9),
                "wall_seconds": wall_seconds,
                **self.report.input_profile(self.trainer.measures_input_wait),
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
        hparams.write(self.writer.model_dir, self.run_config, self.result)
        self.writer.close()
        logging.info("done | %s | %s", outputs.format_metrics(final), f"{wall_seconds:.1f}s")
        return self.result

    # ---------------------------------------------------------------- helpers
    def _restore(self) -> int:
        state = self.checkpointer.restore() if self.checkpointer else None
        if state:
            self.history = state["history"]
            self.result = state["result"]
            for action in self.actions:
                if action.name in state["controls"]:
                    action.load(state["controls"][action.name])
            self.epoch_means = EpochMeans(state.get("epoch_means"))  # absent in old checkpoints
            self.writer.write_json("history.json", self.history)
            self._loop_seconds = state["loop_seconds"]
            self._elapsed_before = state["elapsed_seconds"]
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
            f"non-finite training metrics {outputs.format_metrics(metrics)} between step "
            f"{first + 1} and step {last}; stopped without saving. Last good checkpoint: "
            f"{kept or 'none'}. Try a lower --learning_rate, warm-up, or "
            "--mixed_precision=none"
        )


def weights_fingerprint(model) -> float:
    """A cheap summary of all weights, for logs and multi-worker agreement checks."""
    return float(sum(np.sum(np.abs(v.numpy().astype(np.float64))) for v in model.weights))
