"""The outer loop: runs compiled loops of steps, and between them evaluates, checkpoints, logs and stops.

    state = restore() or fresh
    while step < total_steps:
        trainer.run_train(iterator, n)          # n steps on the device, one Python call
        read metrics (the only sync per loop)   # NaN/Inf check, log line, summaries, user hooks
        at epoch end: evaluate, history, best checkpoint, early stop, LR on plateau, target
        checkpoint when due; on SIGTERM/SIGINT checkpoint and stop
    final checkpoint, test evaluation, export, result.json
"""
import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from typing import Callable, Sequence

import numpy as np
from absl import logging

from framework import input_pipeline, outputs, profiling
from framework.checkpointing import Checkpointer
from framework.config import TrainConfig
from framework.controls import Monitor, ReduceLROnPlateau, Target
from framework.strategies import is_chief


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT: a checkpoint was saved; the same command resumes."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


@dataclasses.dataclass
class Data:
    """In-memory arrays: `train` = (images, labels, ...); `evals` = {"val": (...), "test": (...)}."""
    train: tuple
    evals: dict
    synthetic: bool = False
    host_fn: Callable | None = None  # augmentation in the tf.data map instead of on the device
    pipeline: dict = dataclasses.field(default_factory=dict)  # alternating_flip, num_parallel_calls, prefetch


@dataclasses.dataclass
class LoopInfo:
    """What a per-loop hook sees. A hook returning True stops the run (after a checkpoint)."""
    step: int
    epoch: int
    metrics: dict
    controller: "Controller"
    steps: int = 0          # steps in this loop
    seconds: float = 0.0    # wall time of this loop, device work included
    input_seconds: float = 0.0  # of which waiting for the next batch


class Controller:
    def __init__(self, trainer, data: Data, config: TrainConfig, *, hooks: Sequence[Callable] = (),
                 run_config: dict | None = None):
        self.trainer, self.data, self.config = trainer, data, config
        self.strategy = trainer.strategy
        self.hooks = list(hooks)
        self.run_config = run_config or config.to_dict()
        self.chief = is_chief(self.strategy)
        self.steps_per_epoch = input_pipeline.steps_per_epoch(len(data.train[0]), config.global_batch_size)
        self.total_steps = config.train_steps or config.epochs * self.steps_per_epoch
        self.eval_split = "val" if "val" in data.evals else "test"
        self.monitor_name = config.monitor or f"{self.eval_split}_accuracy"
        self.writer = outputs.RunWriter(config.model_dir, enabled=self.chief)
        self.checkpointer = (Checkpointer(trainer, os.path.join(config.model_dir, "checkpoints"),
                                          max_to_keep=config.keep_checkpoints, is_chief=self.chief)
                             if config.model_dir else None)
        self.best_checkpointer = (Checkpointer(trainer, os.path.join(config.model_dir, "best"),
                                               max_to_keep=1, is_chief=self.chief)
                                  if config.model_dir else None)
        self.best = Monitor(self.monitor_name)
        self.early_stop = Monitor(self.monitor_name) if config.early_stopping_patience else None
        self.plateau = (ReduceLROnPlateau(self.monitor_name, patience=config.reduce_lr_patience,
                                          factor=config.reduce_lr_factor, min_lr=config.min_lr)
                        if config.reduce_lr_patience else None)
        self.target = Target(config.target) if config.target else None
        self.history: dict[str, list] = {}
        self.result: dict = {}
        self._eval_iterators = {}
        self._last_eval = (-1, {})
        self._signal = None
        self._loop_seconds = 0.0      # time inside train loops, over all sessions of this run
        self._elapsed_before = 0.0    # wall time of earlier sessions (before a resume)
        self._session_start = time.time()
        self._last_summary = 0.0
        # Train-loop seconds and input-wait seconds of this session, for input_profile: the loops that
        # traced train_loop apart, since tracing is neither step nor input time.
        self._wait_and_loop_seconds = {"traced": [0.0, 0.0], "compiled": [0.0, 0.0]}
        self.profile = profiling.ProfileWindow(profiling.parse_profile_steps(config.profile_steps),
                                               config.model_dir if self.chief else None)

    # ---------------------------------------------------------------- public
    def run(self) -> dict:
        """Train to the end (or a stop), then evaluate on test and write result.json. Returns it."""
        start = self._session_start = time.time()
        start_step = self._restore()
        if start_step:
            logging.info("resumed from %s at step %d", self.checkpointer.latest, start_step)
        outputs.log_model_summary(self.trainer.model)
        iterator = iter(self.strategy.distribute_datasets_from_function(self._train_dataset_fn(start_step)))
        # A run that early-stopped or hit its target stays stopped when resumed; a hook's stop is a pause.
        if self.result.get("stop_reason") not in ("early_stopping", "target"):
            self.result.pop("stop_reason", None)
            with self._signals_caught():
                try:
                    self.result.setdefault("stop_reason", self._train(iterator, start_step, start))
                finally:
                    self.profile.close()
        return self._finish(start)

    def evaluate(self, split: str) -> dict[str, float]:
        if split not in self._eval_iterators:
            fn, num_batches = input_pipeline.eval_dataset_fn(
                self.data.evals[split], global_batch_size=self.config.eval_batch_size or
                self.config.global_batch_size)
            iterator = iter(self.strategy.distribute_datasets_from_function(fn))
            self._eval_iterators[split] = (iterator, num_batches)
        iterator, num_batches = self._eval_iterators[split]
        return {f"{split}_{k}": v for k, v in self.trainer.evaluate(iterator, num_batches).items()}

    # ---------------------------------------------------------------- the loop
    def _train(self, iterator, step: int, start: float) -> str:
        trainer, config = self.trainer, self.config
        rate = None  # steps/s, smoothed, for the ETA
        while step < self.total_steps:
            epoch_end = (step // self.steps_per_epoch + 1) * self.steps_per_epoch
            loop_end = min(step + config.steps_per_loop, epoch_end, self.total_steps)
            if config.checkpoint_every:
                loop_end = min(loop_end, (step // config.checkpoint_every + 1) * config.checkpoint_every)
            loop_end = min([loop_end] + [b for b in self.profile.boundaries() if b > step])
            self.profile.before_loop(step)
            traces = trainer.trace_counts()["train_loop"]
            t0 = time.time()
            trainer.run_train(iterator, loop_end - step)
            metrics = trainer.train_results()  # host-device sync point: the loop's work is done
            seconds = time.time() - t0
            input_seconds = trainer.take_input_wait()
            self.profile.after_loop(loop_end)
            self._loop_seconds += seconds
            kind = "compiled" if trainer.trace_counts()["train_loop"] == traces else "traced"
            self._wait_and_loop_seconds[kind][0] += input_seconds
            self._wait_and_loop_seconds[kind][1] += seconds
            if not all(math.isfinite(v) for v in metrics.values()):
                self._stop_on_non_finite(step, loop_end, metrics)
            loop_steps, step = loop_end - step, loop_end
            epoch = math.ceil(step / self.steps_per_epoch)
            rate = loop_steps / seconds if rate is None else 0.7 * rate + 0.3 * loop_steps / seconds
            examples_per_sec = loop_steps * config.global_batch_size / seconds
            self.writer.loop_line(step=step, total=self.total_steps, epoch=epoch, metrics=metrics,
                                  examples_per_sec=examples_per_sec, input_fraction=input_seconds / seconds,
                                  eta_seconds=(self.total_steps - step) / rate)
            # At most one train summary a second (and at every epoch end): each write costs memory
            # that the soak benchmark saw grow when loops of a small model ran 20 times a second.
            if time.time() - self._last_summary >= 1.0 or step in (epoch_end, self.total_steps):
                self._last_summary = time.time()
                self.writer.scalars("train", step, {**metrics, "learning_rate": trainer.current_learning_rate(),
                                                    "examples_per_sec": examples_per_sec,
                                                    "input_wait_fraction": input_seconds / seconds,
                                                    "step_seconds": (seconds - input_seconds) / loop_steps})
            info = LoopInfo(step, epoch, metrics, self, loop_steps, seconds, input_seconds)
            stop = any([hook(info) for hook in self.hooks])
            if stop:
                self.result["stop_reason"] = "hook"
            if step == self.total_steps or step == epoch_end and config.eval_every_epochs and \
                    epoch % config.eval_every_epochs == 0:
                stop = self._end_epoch(step, epoch, metrics, start) or stop
            if self._checkpoint_due(step, epoch_end) or stop or self._signal:
                self._save(step)
            if self._signal:
                raise TrainingInterrupted(
                    f"stopped by signal {self._signal} at step {step}; checkpoint saved in "
                    f"{self.checkpointer.directory if self.checkpointer else '(no --model_dir)'}: run the "
                    "same command to resume", self._signal)
            if stop:
                return self.result["stop_reason"]
        return "completed"

    def _end_epoch(self, step, epoch, train_metrics, start) -> bool:
        """Evaluate, then the controls. Returns True to stop."""
        eval_metrics = self.evaluate(self.eval_split)
        self._last_eval = (step, eval_metrics)  # the final evaluation reuses it if nothing trained since
        self.writer.eval_line(step, eval_metrics)
        self.writer.scalars("eval", step, eval_metrics)
        row = {"epoch": epoch, "step": step, **train_metrics, **eval_metrics,
               "learning_rate": self.trainer.current_learning_rate(), "wall_seconds": time.time() - start}
        for key, value in row.items():
            self.history.setdefault(key, []).append(value)
        self.writer.write_json("history.json", self.history)
        self.trainer.reset_train_metrics()
        if self.best.update(eval_metrics) and self.best_checkpointer:
            self.best_checkpointer.save(step, self._loop_state())
            self.result.update(best_step=step, best_value=self.best.best)
        if self.plateau:
            scale = float(self.trainer.lr_scale.numpy())
            new = self.plateau.update(eval_metrics, scale, self.config.learning_rate)
            if new != scale:
                logging.info("reduce LR on plateau: %s did not improve for %d evaluations; LR scale %.4g -> "
                             "%.4g", self.monitor_name, self.config.reduce_lr_patience, scale, new)
                self.trainer.lr_scale.assign(new)
        if self.target and self.target.reached(eval_metrics):
            logging.info("target %s reached at step %d", self.target.text, step)
            self.result.update(time_to_target_seconds=time.time() - start, target_step=step,
                               stop_reason="target")
            return True
        if self.early_stop and not self.early_stop.update(eval_metrics) and \
                self.early_stop.wait >= self.config.early_stopping_patience:
            logging.info("early stopping: %s did not improve for %d evaluations (best %.4f)",
                         self.monitor_name, self.early_stop.wait, self.early_stop.best)
            self.result["stop_reason"] = "early_stopping"
            return True
        return False

    def _finish(self, start: float) -> dict:
        wall_seconds = self._elapsed_before + time.time() - start
        final = {}
        step = int(self.trainer.step.numpy())
        last_step, last_metrics = self._last_eval
        for split in sorted(self.data.evals):
            final.update(last_metrics if last_step == step and split == self.eval_split else self.evaluate(split))
        counts = outputs.parameter_counts(self.trainer.model)
        self.result.update({
            **final, "train_steps": step, "epochs": step / self.steps_per_epoch,
            # Training throughput: time inside train loops only (evaluation and checkpoints excluded).
            "examples_per_sec": step * self.config.global_batch_size / max(self._loop_seconds, 1e-9),
            "wall_seconds": wall_seconds,
            **self.input_profile(), "strategy": self.config.strategy,
            "num_replicas": self.strategy.num_replicas_in_sync, **counts,
            "weights_fingerprint": weights_fingerprint(self.trainer.model),
            "history_file": self.writer.path("history.json"), "config": self.run_config})
        if self.config.export and self.writer.model_dir:
            self.result.update(self._export())
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
        return {"input_wait_fraction": fraction, "bound": profiling.classify(fraction),
                "input_wait_seconds": wait, "train_loop_seconds": loop}

    # ---------------------------------------------------------------- helpers
    def _train_dataset_fn(self, start_step):
        data, config = self.data, self.config
        if data.synthetic:
            return input_pipeline.synthetic_dataset_fn(data.train, global_batch_size=config.global_batch_size,
                                                       seed=config.seed)
        return input_pipeline.train_dataset_fn(data.train, global_batch_size=config.global_batch_size,
                                               seed=config.seed, start_step=start_step,
                                               steps_per_fetch=self.trainer.steps_per_fetch,
                                               host_fn=data.host_fn, **data.pipeline)

    def _restore(self) -> int:
        state = self.checkpointer.restore() if self.checkpointer else None
        if state:
            self.history = state["history"]
            self.result = state["result"]
            for name, control in (("best", self.best), ("early_stop", self.early_stop),
                                  ("plateau", self.plateau and self.plateau.monitor)):
                if control and name in state["controls"]:
                    control.load(state["controls"][name])
            self.writer.write_json("history.json", self.history)
            self._loop_seconds, self._elapsed_before = state["loop_seconds"], state["elapsed_seconds"]
        return int(self.trainer.step.numpy())

    def _loop_state(self) -> dict:
        controls = {"best": self.best.state}
        if self.early_stop:
            controls["early_stop"] = self.early_stop.state
        if self.plateau:
            controls["plateau"] = self.plateau.monitor.state
        return {"history": self.history, "result": self.result, "controls": controls,
                "loop_seconds": self._loop_seconds,
                "elapsed_seconds": self._elapsed_before + time.time() - self._session_start}

    def _checkpoint_due(self, step, epoch_end) -> bool:
        if step == self.total_steps:
            return True
        if self.config.checkpoint_every:
            return step % self.config.checkpoint_every == 0
        return step == epoch_end

    def _save(self, step):
        if self.checkpointer:
            self.checkpointer.save(step, self._loop_state())

    def _stop_on_non_finite(self, first, last, metrics):
        kept = self.checkpointer.latest if self.checkpointer else None
        self.result["stop_reason"] = "non_finite_loss"
        raise NonFiniteLossError(
            f"non-finite training metrics {outputs.format_metrics(metrics)} between step {first + 1} and "
            f"step {last}; stopped without saving. Last good checkpoint: {kept or 'none'}. Try a lower "
            "--learning_rate, warm-up, or --mixed_precision=none")

    def _export(self) -> dict:
        keras_path = self.writer.path("model.keras")
        saved_model = self.writer.path("saved_model")
        self.trainer.model.save(keras_path)
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # the SavedModel writer logs a page of INFO lines
        try:
            self.trainer.model.export(saved_model, verbose=False)
        except Exception as err:  # serving export is a bonus; the .keras file is the model of record
            logging.warning("SavedModel export failed (%s); the .keras file was written", err)
            saved_model = None
        finally:
            logging.set_verbosity(verbosity)
        return {"model_file": keras_path, "saved_model": saved_model}

    @contextlib.contextmanager
    def _signals_caught(self):
        """SIGTERM/SIGINT set a flag; the loop checkpoints and stops at the next loop end."""
        def handle(signum, _frame):
            if self._signal:  # a second Ctrl-C means now
                raise KeyboardInterrupt
            logging.warning("signal %d: will checkpoint and stop after this loop", signum)
            self._signal = signum

        previous = {}
        if threading.current_thread() is threading.main_thread():  # only it may catch signals
            previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def weights_fingerprint(model) -> float:
    """A cheap summary of all weights, for logs and multi-worker agreement checks."""
    return float(sum(np.sum(np.abs(v.numpy().astype(np.float64))) for v in model.weights))
