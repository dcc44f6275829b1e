"""What a run leaves behind: TensorBoard scalars, history.json, result.json, and the console
lines."""

import json
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf
from absl import logging

from framework import profiling
from framework.checkpointing import atomic_write


def write_json(path: str, data) -> None:
    """Atomic write (temp file + rename): a reader never sees half a file; a full disk is one
    line."""
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=_jsonable)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def parameter_counts(model) -> dict[str, int]:
    count = lambda weights: int(sum(np.prod(w.shape) for w in weights))  # noqa: E731
    return {
        "trainable_params": count(model.trainable_weights),
        "non_trainable_params": count(model.non_trainable_weights),
    }


def log_model_summary(model) -> None:
    lines = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line))
    counts = parameter_counts(model)
    logging.info(
        "model %s\n%s\ntrainable params: %s | non-trainable params: %s",
        model.name,
        "\n".join(lines),
        f"{counts['trainable_params']:,}",
        f"{counts['non_trainable_params']:,}",
    )


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_metrics(metrics: dict[str, float]) -> str:
    return " | ".join(f"{k}: {_format_value(v)}" for k, v in metrics.items())


def _format_value(value) -> str:
    if isinstance(value, int):  # counts (skipped_steps)
        return str(value)
    if (
        value != 0 and abs(value) < 1e-3 or abs(value) >= 1e5
    ):  # small LRs, loss scales: digits, not 0.0000
        return f"{value:.3e}"
    return f"{value:.4f}"


class RunWriter:
    """Summaries and files under model_dir (nothing when model_dir is None or on non-chief
    workers)."""

    def __init__(self, model_dir: str | None, *, enabled: bool = True):
        self.model_dir = model_dir if enabled else None
        self._writers = {}
        self._progress = _ProgressBar() if sys.stderr.isatty() else None
        if self.model_dir:
            os.makedirs(self.model_dir, exist_ok=True)

    def path(self, name: str) -> str | None:
        return os.path.join(self.model_dir, name) if self.model_dir else None

    def scalars(self, split: str, step: int, values: dict[str, float]) -> None:
        if not self.model_dir:
            return
        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(
                os.path.join(self.model_dir, split)
            )
        with self._writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def loop_line(
        self,
        *,
        step: int,
        total: int,
        epoch: int,
        metrics: dict,
        examples_per_sec: float,
        input_fraction: float,
        eta_seconds: float,
        bound: str = "step-bound",
    ) -> None:
        """One fixed-format line per loop; a progress bar on an interactive terminal only. The input
        wait carries its verdict when the loop waited for input (`bound`:
        framework.profiling.classify)."""
        verdict = "" if bound == "step-bound" else f" ({bound})"
        line = (
            f"train | step: {step:>7d}/{total} | epoch: {epoch:>3d} | {format_metrics(metrics)} | "
            f"examples/s: {examples_per_sec:,.0f} | input wait: {input_fraction:.0%}{verdict} | "
            f"ETA: {format_duration(eta_seconds)}"
        )
        if self._progress:
            self._progress.show(step, total, line)
        else:
            logging.info(line)

    def eval_line(self, step: int, metrics: dict) -> None:
        if self._progress:
            self._progress.clear()
        logging.info("eval  | step: %7d | %s", step, format_metrics(metrics))

    def write_json(self, name: str, data) -> None:
        if self.model_dir:
            write_json(os.path.join(self.model_dir, name), data)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()
        if self._progress:
            self._progress.clear()

    def close(self) -> None:
        self.flush()
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class _ProgressBar:
    def __init__(self, width: int = 30):
        self.width, self._start = width, time.time()

    def show(self, step, total, line):
        done = int(self.width * step / max(total, 1))
        sys.stderr.write(f"\r[{'=' * done}{'.' * (self.width - done)}] {line}\033[K")
        sys.stderr.flush()

    def clear(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


class LoopReport:
    """What each loop reports: its console line (rate, ETA, input-bound verdict), its train
    summaries, and the input-wait versus step-time account of the session (result.json's
    input_profile)."""

    def __init__(
        self, writer: RunWriter, strategy, *, total_steps: int, steps_per_epoch: int, batch
    ):
        self.writer, self.strategy, self.batch = writer, strategy, batch
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self._rate = None  # steps/s, smoothed, for the ETA
        self._last_summary = 0.0
        self._host_cpu = None
        # Train-loop seconds and input-wait seconds of this session: the loops that traced
        # train_loop apart, since tracing is neither step nor input time.
        self._wait_and_loop = {"traced": [0.0, 0.0], "compiled": [0.0, 0.0]}

    def add(self, info, *, traced: bool) -> None:
        """One loop (controller.LoopInfo): its time, its line and (at most once a second) its
        summaries."""
        account = self._wait_and_loop["traced" if traced else "compiled"]
        account[0] += info.input_seconds
        account[1] += info.seconds
        step, seconds = info.step, info.seconds
        rate = info.steps / seconds
        self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        examples_per_sec = info.steps * self.batch / seconds
        if self._host_cpu is None:
            self._host_cpu = profiling.step_on_host_cpu(self.strategy)
        self.writer.loop_line(
            step=step,
            total=self.total_steps,
            epoch=info.epoch,
            metrics=info.metrics,
            examples_per_sec=examples_per_sec,
            input_fraction=info.input_seconds / seconds,
            eta_seconds=(self.total_steps - step) / self._rate,
            bound=profiling.classify(info.input_seconds / seconds, step_on_host_cpu=self._host_cpu),
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

    def input_profile(self, measured: bool) -> dict:
        """Input wait versus step time over this session's train loops."""
        if not measured:
            return {"input_wait_fraction": None, "bound": "not measured (--deterministic)"}
        # The loops that ran already compiled; the tracing loop only when no other ran (a short
        # run).
        wait, loop = self._wait_and_loop["compiled"]
        if not loop:
            wait, loop = self._wait_and_loop["traced"]
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
