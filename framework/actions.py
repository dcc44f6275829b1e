"""The controller's policies as small actions with their own state, as Orbit's actions are.

The controller calls every action at three moments, all eager and between loops:

    before_loop(step)            before a compiled loop starts
    after_loop(info) -> reason   after it, with its LoopInfo (metrics of that loop)
    after_eval(row) -> reason    after an evaluation, with the history row (train + eval metrics)

A returned string stops the run with that reason (after a checkpoint). `state` is JSON saved in
every checkpoint under the action's `name`, and `load` restores it, so a resumed run makes the same
decisions as one that never stopped. `finish(result)` adds the action's entries to result.json.
"""

import contextlib
import dataclasses
import operator
import signal
import threading
from typing import Callable

import tensorflow as tf
from absl import logging

from framework import profiling
from framework.checkpointing import WriteError, atomic_write
from framework.config import parse_target
from framework.controls import Monitor
from framework.strategies import agreed


@dataclasses.dataclass
class Row:
    """What after_eval sees: the history row, and where it stands in the run."""

    step: int
    metrics: (
        dict  # the row: train metrics (epoch means, bare names) and eval metrics (<split>_<name>)
    )
    elapsed_seconds: float  # wall time of the run so far, earlier sessions included
    result: dict  # result.json's contents so far; an action may add its entries


class Action:
    name = ""  # the key of its state in the checkpoint; "" for an action without state

    def before_loop(self, step: int) -> None:
        pass

    def after_loop(self, info) -> str | None:
        return None

    def after_eval(self, row: Row) -> str | None:
        return None

    def finish(self, result: dict) -> None:
        pass

    @property
    def state(self) -> dict:
        return {}

    def load(self, state: dict) -> None:
        pass


class Hooks(Action):
    """The user's per-loop hooks; any returning True pauses the run (a resume continues it)."""

    def __init__(self, hooks: list[Callable]):
        self.hooks = hooks  # the controller's list: a hook added to controller.hooks runs too

    def after_loop(self, info) -> str | None:
        stops = [hook(info) for hook in self.hooks]  # every hook sees every loop
        return "hook" if any(stops) else None


class _Monitored(Action):
    """An action that decides on one metric's history: its Monitor is its checkpointed state."""

    monitor: Monitor

    @property
    def state(self) -> dict:
        return self.monitor.state

    def load(self, state: dict) -> None:
        self.monitor.load(state)


class BestCheckpoint(_Monitored):
    """Save a checkpoint whenever the monitored metric improves; result.json gets its step and
    value."""

    name = "best"

    def __init__(self, monitor: str, save: Callable[[int], object] | None):
        self.monitor, self.save = Monitor(monitor), save

    def after_eval(self, row: Row) -> str | None:
        if self.monitor.update(row.metrics) and self.save:
            self.save(row.step)
            row.result.update(best_step=row.step, best_value=self.monitor.best)
        return None


class ReduceLROnPlateau(_Monitored):
    """Multiply the LR scale by `factor` after `patience` evaluations without improvement."""

    name = "plateau"

    def __init__(
        self, monitor: str, *, patience: int, factor: float, min_lr: float, base_lr: float, lr_scale
    ):
        self.monitor = Monitor(monitor)
        self.patience, self.factor, self.base_lr = patience, factor, base_lr
        self.floor = min_lr / base_lr if base_lr > 0 else 0.0  # min_lr as a scale of the base LR
        self.lr_scale = lr_scale  # the trainer's tf.Variable, checkpointed with the weights

    def after_eval(self, row: Row) -> str | None:
        if self.monitor.update(row.metrics) or self.monitor.wait < self.patience:
            return None
        self.monitor.wait = 0
        scale = float(self.lr_scale.numpy())
        new = max(scale * self.factor, self.floor)
        if new != scale:
            logging.info(
                "reduce LR on plateau: %s did not improve for %d evaluations; LR scale %.4g -> "
                "%.4g",
                self.monitor.name,
                self.patience,
                scale,
                new,
            )
            self.lr_scale.assign(new)
        return None


class Target(Action):
    """`test_accuracy>=0.94` or `loss<=0.4`: stop once an evaluation's row meets it."""

    def __init__(self, text: str):
        self.metric, op, self.value = parse_target(text)
        self.compare = operator.ge if op == ">=" else operator.le
        self.text = text

    def after_eval(self, row: Row) -> str | None:
        if not self.compare(row.metrics[self.metric], self.value):
            return None
        logging.info("target %s reached at step %d", self.text, row.step)
        row.result.update(time_to_target_seconds=row.elapsed_seconds, target_step=row.step)
        return "target"


class EarlyStopping(_Monitored):
    name = "early_stop"

    def __init__(self, monitor: str, *, patience: int):
        self.monitor, self.patience = Monitor(monitor), patience

    def after_eval(self, row: Row) -> str | None:
        if self.monitor.update(row.metrics) or self.monitor.wait < self.patience:
            return None
        logging.info(
            "early stopping: %s did not improve for %d evaluations (best %.4f)",
            self.monitor.name,
            self.monitor.wait,
            self.monitor.best,
        )
        return "early_stopping"


class Profile(Action):
    """--profile_steps: a tf.profiler trace of steps (START, END]; loops end at both boundaries."""

    def __init__(self, steps: tuple[int, int] | None, model_dir: str | None):
        self.window = profiling.ProfileWindow(steps, model_dir)

    def boundaries(self) -> tuple[int, ...]:
        return self.window.boundaries()

    def before_loop(self, step: int) -> None:
        self.window.before_loop(step)

    def after_loop(self, info) -> str | None:
        self.window.after_loop(info.step)
        return None

    def close(self) -> None:
        self.window.close()


class Signals(Action):
    """SIGTERM/SIGINT set `received`; at the loop's end `after_loop` turns it into `decided`, on
    which the controller checkpoints and raises TrainingInterrupted (whatever the other actions
    decided), so the same command resumes. `decided` is taken at one point per loop: a signal that
    lands after it (while the checkpoint of that step is saved, say) counts at the next loop's end,
    on every worker alike."""

    def __init__(self, strategy=None):
        self.received = None  # set by the handler, at any moment
        self.decided = None  # the signal to stop on, fixed once per loop in after_loop
        self.strategy = strategy

    def after_loop(self, info) -> None:
        """On several workers a signal may reach one only: all agree (an all-reduce per loop) and
        take the signal the others received, so every worker checkpoints (a collective) and stops at
        the same step."""
        received = self.received  # read once: the handler may set it while this runs
        if self.strategy is not None:
            # One all-reduce carries both: 1000 x (workers signalled) + the sum of their signal
            # numbers.
            count, total = divmod(
                round(
                    agreed(
                        self.strategy,
                        1000.0 * bool(received) + (received or 0),
                        tf.distribute.ReduceOp.SUM,
                    )
                ),
                1000,
            )
            received = (received or round(total / count)) if count else None
        self.decided = received
        return None

    @contextlib.contextmanager
    def caught(self):
        def handle(signum, _frame):
            if self.received:  # a second Ctrl-C means now
                raise KeyboardInterrupt
            logging.warning("signal %d: will checkpoint and stop after this loop", signum)
            self.received = signum

        previous = {}
        if threading.current_thread() is threading.main_thread():  # only it may catch signals
            previous = {
                signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)
            }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class Export(Action):
    """At the end: the .keras model (the model of record) and a SavedModel for serving."""

    def __init__(self, model, writer):
        self.model, self.writer = model, writer

    def finish(self, result: dict) -> None:
        keras_path, saved_model = self.writer.path("model.keras"), self.writer.path("saved_model")
        # Each written beside its place and renamed there: a full disk leaves no half file
        # (WriteError, one line; the same command resumes at the final checkpoint and exports
        # again).
        with atomic_write(keras_path) as tmp:
            self.model.save(tmp)
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # the SavedModel writer logs a page of INFO lines
        try:
            with atomic_write(saved_model) as tmp:
                self.model.export(tmp, verbose=False)
        except WriteError:
            raise
        except (
            Exception
        ) as err:  # serving export is a bonus; the .keras file is the model of record
            logging.warning("SavedModel export failed (%s); the .keras file was written", err)
            saved_model = None
        finally:
            logging.set_verbosity(verbosity)
        result.update(model_file=keras_path, saved_model=saved_model)
