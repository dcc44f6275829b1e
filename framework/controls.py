"""Training controls that Keras users had as callbacks, as small state machines run per evaluation.

Each control has `update(metrics) -> ...` and a JSON-able `state` saved with the checkpoint, so a
resumed run makes the same decisions as one that never stopped.
"""
import math
import operator

from framework.config import parse_target


class Monitor:
    """Tracks the best value of one metric; `mode` is inferred ('loss'/'error' → min, else max)."""

    def __init__(self, name: str, mode: str = "auto", min_delta: float = 0.0):
        self.name = name
        self.mode = mode if mode != "auto" else ("min" if "loss" in name or "error" in name else "max")
        self.min_delta = min_delta
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0

    def update(self, metrics: dict) -> bool:
        """True when the metric improved; otherwise counts one more epoch of waiting."""
        if self.name not in metrics:
            raise KeyError(f"--monitor={self.name!r} is not an evaluation metric; have: {sorted(metrics)}")
        value = metrics[self.name]
        better = (value < self.best - self.min_delta if self.mode == "min"
                  else value > self.best + self.min_delta)
        if better:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        return better

    @property
    def state(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load(self, state: dict) -> None:
        self.best, self.wait = state["best"], state["wait"]


class ReduceLROnPlateau:
    """Multiply the LR scale by `factor` after `patience` evaluations without improvement."""

    def __init__(self, monitor: str, *, patience: int, factor: float, min_lr: float):
        self.monitor = Monitor(monitor)
        self.patience, self.factor, self.min_lr = patience, factor, min_lr

    def update(self, metrics: dict, lr_scale: float, base_lr: float) -> float:
        """Returns the new LR scale."""
        if self.monitor.update(metrics) or self.monitor.wait < self.patience:
            return lr_scale
        self.monitor.wait = 0
        floor = self.min_lr / base_lr if base_lr > 0 else 0.0
        return max(lr_scale * self.factor, floor)


class Target:
    """`test_accuracy>=0.94`: reached once an evaluation meets it."""

    def __init__(self, text: str):
        self.metric, op, self.value = parse_target(text)
        self.compare = operator.ge if op == ">=" else operator.le
        self.text = text

    def reached(self, metrics: dict) -> bool:
        if self.metric not in metrics:
            raise KeyError(f"--target={self.text!r}: {self.metric!r} is not an evaluation metric; "
                           f"have: {sorted(metrics)}")
        return self.compare(metrics[self.metric], self.value)
