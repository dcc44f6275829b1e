"""What the outer loop is made of, apart from running it: the data it trains on (Data), what a hook
sees after a loop (LoopInfo), the epoch's running train means (EpochMeans), the metric names the
history rows hold and --monitor/--target/--eval_splits are checked against, and where loops end
(loop_lengths, loop_plan).
"""

import dataclasses
import math
from typing import Callable, Sequence

from framework.config import ConfigError, TrainConfig, parse_target


@dataclasses.dataclass
class Data:
    """In-memory arrays: `train` = (images, labels, ...); `evals` = {"val": (...), "test": (...)};
    any of them may be an input_pipeline.StreamedSource instead (read from files while training)."""

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
    controller: object  # the framework.controller.Controller that ran the loop
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
    """--monitor and --target name a column of the history rows they are checked on; else
    ConfigError. Train metrics are bare (`loss`: the epoch's running mean over its steps),
    evaluations are <split>_<metric> (`test_accuracy`; `train_loss` is the training set evaluated,
    with --eval_splits=train)."""
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
    """The splits evaluated at each evaluation: --eval_splits (each in data.evals, or train), else
    val or test."""
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
    """The info line on loop and fetch sizes, and why steps_per_fetch is 1 when it is forced to
    1."""
    per_loop = min(config.steps_per_loop, steps_per_epoch, total_steps)
    line = (
        f"loops of up to {per_loop} steps per compiled call "
        f"(--steps_per_loop={config.steps_per_loop}, {steps_per_epoch} steps per epoch, "
        f"{total_steps} in all); steps_per_fetch: {steps_per_fetch}"
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
            "loops end at multiples of "
            f"{', '.join(f'{k} {v}' for k, v in lengths.items() if v)}, whose greatest "
            "common divisor is 1, and a fetch must not straddle two loops; a "
            f"--steps_per_loop that divides {steps_per_epoch} (and --train_steps a "
            "multiple of it) allows more"
        )
    else:
        why = (
            "one global batch is too large for a fetch of several "
            "(framework.run.steps_per_fetch's byte cap)"
        )
    return f"{line} (forced to 1: {why})"
