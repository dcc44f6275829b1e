"""Keras callbacks in the compiled loop: `train(..., callbacks=[...])`, `--callbacks=module:fn`.

Standard `keras.callbacks.Callback` objects, driven through Keras' own `CallbackList`, with `fit`'s
meaning and `logs` keys (WORKSPACE.md, "One naming"):

    set_model, set_params          before training: the Keras model; {"verbose", "epochs", "steps"}
    on_train_begin / on_train_end  around the run (on_train_end's logs: the last epoch's)
    on_epoch_begin(epoch)          0-based, as in fit; a resumed run begins the epoch it resumes in
    on_train_batch_begin / _end    once per compiled loop, as fit does with steps_per_execution:
    begin
                                   with the loop's first step in the epoch, end with its last step
                                   and the loop's mean train metrics (--steps_per_loop=1: once per
                                   step)
    on_test_begin / on_test_end    around each evaluated split, with its metrics named bare (as
                                   `evaluate` names them); no per-batch test hooks (one compiled
                                   pass)
    on_epoch_end(epoch, logs)      the epoch's train means (`loss`, `accuracy`, ... plus the
                                   engine's `learning_rate`, `reg_loss`, `grad_norm`) and, when it
                                   evaluated, `<split>_<metric>` (`val_accuracy`, as fit names
                                   validation)

`model.stop_training = True` (EarlyStopping's way) stops at the end of the current loop, with a
checkpoint; the stop is final, as --early_stopping_patience's is. Monitoring callbacks' progress
(`wait`, `best`, `best_epoch`, `stopped_epoch`) is saved in every checkpoint and restored after
on_train_begin, so a resumed EarlyStopping counts on; a CSVLogger appends to its file on a resume.
Callbacks run on the host between loops and see copies of the metrics: they do not change the
numbers of a run. Refused at start, in one line: callbacks that set the optimizer's learning rate
(a schedule drives it) and BackupAndRestore (our checkpoints resume already).
"""

import importlib
import importlib.util
import math
import os

import keras

from framework.actions import Action
from framework.config import ConfigError

# The attributes in which Keras' monitoring callbacks keep their progress (MonitorCallback,
# EarlyStopping).
PROGRESS = ("wait", "best", "best_epoch", "stopped_epoch")


def load(spec: str) -> list:
    """`--callbacks=package.module:fn` (or path/to/file.py:fn): fn() returns a list of Keras
    callbacks. ConfigError, before training, when it cannot be imported, called or returns something
    else."""
    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        raise ConfigError(
            f"--callbacks={spec}: write package.module:function or path/to/file.py:function"
        )
    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise ConfigError(f"--callbacks={spec}: no such file {where}")
            module_spec = importlib.util.spec_from_file_location(f"tfloops_callbacks_{name}", where)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        found = getattr(module, name)()
    except ConfigError:
        raise
    except Exception as err:  # the user's code: what failed, in one line
        raise ConfigError(
            f"--callbacks={spec}: {type(err).__name__}: {' '.join(str(err).split())}"
        ) from None
    if not isinstance(found, (list, tuple)):
        raise ConfigError(
            f"--callbacks={spec}: {name}() returned {type(found).__name__}, not a list"
        )
    return list(found)


def check(callbacks, *, log_names) -> None:
    """ConfigError for what the compiled loop cannot honour; `log_names`: the keys on_epoch_end's
    logs can hold (a monitor must name one of them)."""
    for callback in callbacks:
        kind = type(callback).__name__
        if not isinstance(callback, keras.callbacks.Callback):
            raise ConfigError(f"callbacks: {callback!r} is not a keras.callbacks.Callback")
        if isinstance(
            callback,
            (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler),
        ):
            raise ConfigError(
                f"callbacks: {kind} sets optimizer.learning_rate, which a schedule drives here "
                "(--lr_schedule); use --reduce_lr_patience (with --reduce_lr_factor, "
                "--min_lr) instead"
            )
        if isinstance(callback, keras.callbacks.BackupAndRestore):
            raise ConfigError(
                "callbacks: BackupAndRestore is not needed: every checkpoint under --model_dir "
                "holds the whole run, and the same command resumes it"
            )
        monitor = getattr(callback, "monitor", None)
        # Keras' monitoring callbacks (EarlyStopping; ModelCheckpoint when it keeps the best only).
        if hasattr(callback, "_set_monitor_op") and getattr(callback, "save_best_only", True):
            if monitor not in log_names:
                raise ConfigError(
                    f"callbacks: {kind}(monitor={monitor!r}) names no metric of this run; "
                    f"valid: {', '.join(log_names)}"
                )
            if callback.mode == "auto" and not monitor.endswith("loss"):
                raise ConfigError(
                    f"callbacks: {kind}(monitor={monitor!r}, mode='auto'): the model is not "
                    "compiled, so Keras cannot tell the direction; pass mode='max' or "
                    "mode='min'"
                )


class KerasCallbacks(Action):
    """The controller's driver of a CallbackList; its checkpointed state is the callbacks'
    progress."""

    def __init__(self, callbacks, *, model, optimizer, steps_per_epoch: int, total_steps: int):
        self.steps_per_epoch = steps_per_epoch
        self.model, self.optimizer = model, optimizer
        self.name = (
            "callbacks" if callbacks else ""
        )  # a run without callbacks saves no state of theirs
        self.list = keras.callbacks.CallbackList(
            list(callbacks),
            model=model,
            verbose=0,
            epochs=math.ceil(total_steps / steps_per_epoch),
            steps=steps_per_epoch,
        )
        self._epoch = None  # the epoch begun and not yet ended
        self._loaded = None  # progress restored from a checkpoint, applied after on_train_begin

    def train_begin(self, resumed: bool) -> None:
        self.model.stop_training = False
        if self.name and not hasattr(self.model, "optimizer"):
            # fit's model has its optimizer (TensorBoard reads its iterations and LR); ours is the
            # trainer's. Set around object tracking, so checkpoints and exports stay as they were.
            object.__setattr__(self.model, "optimizer", self.optimizer)
            self._lent_optimizer = True
        if resumed:
            for callback in self.list.callbacks:
                if isinstance(callback, keras.callbacks.CSVLogger):
                    callback.append = True  # the rows of the earlier sessions stay
        self.list.on_train_begin()
        for callback, progress in zip(self.list.callbacks, self._loaded or ()):
            for name, value in progress.items():
                setattr(callback, name, value)

    def before_loop(self, step: int) -> None:
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        if self._epoch is None:
            self._epoch = epoch
            self.list.on_epoch_begin(epoch)
        self.list.on_train_batch_begin(in_epoch)

    def after_loop(self, info) -> str | None:
        last = (info.step - 1) % self.steps_per_epoch
        self.list.on_train_batch_end(last, dict(info.metrics))
        return self._stop()

    def test_begin(self) -> None:
        self.list.on_test_begin()

    def test_end(self, split: str, metrics: dict) -> None:
        prefix = f"{split}_"
        self.list.on_test_end({k.removeprefix(prefix): v for k, v in metrics.items()})

    def epoch_end(self, logs: dict) -> str | None:
        """At an epoch's end (or the run's last step): `logs` holds the epoch's train means and the
        evaluation's metrics, if it evaluated."""
        self.logs = dict(logs)
        self.list.on_epoch_end(self._epoch, self.logs)
        self._epoch = None
        return self._stop()

    def train_end(self) -> None:
        self.list.on_train_end(getattr(self, "logs", None))
        self.close()

    def close(self) -> None:
        """Takes back the optimizer lent to the model (also when training failed)."""
        if getattr(self, "_lent_optimizer", False):
            object.__delattr__(self.model, "optimizer")
            self._lent_optimizer = False

    def _stop(self) -> str | None:
        return "callback" if getattr(self.model, "stop_training", False) else None

    @property
    def state(self) -> dict:
        progress = []
        for callback in self.list.callbacks:
            values = {name: getattr(callback, name, None) for name in PROGRESS}
            progress.append(
                {
                    k: v.item() if hasattr(v, "item") else v
                    for k, v in values.items()
                    if isinstance(v, (int, float, str)) or hasattr(v, "item")
                }
            )
        return {"progress": progress}

    def load(self, state: dict) -> None:
        self._loaded = state.get("progress")
