"""Monitor: the best value of one metric and the evaluations since it, the state machine that the
best-checkpoint, early-stopping and plateau actions (framework/actions.py) are built on.

Its `state` is JSON saved with the checkpoint, so a resumed run makes the same decisions as one
that never stopped.
"""

import math


class Monitor:
    """Tracks the best value of one metric; `mode` is inferred ('loss'/'error' → min, else max)."""

    def __init__(self, name: str, mode: str = "auto", min_delta: float = 0.0):
        self.name = name
        self.mode = (
            mode if mode != "auto" else ("min" if "loss" in name or "error" in name else "max")
        )
        self.min_delta = min_delta
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0

    def update(self, metrics: dict) -> bool:
        """True when the metric improved; otherwise counts one more epoch of waiting."""
        if self.name not in metrics:
            raise KeyError(f"{self.name!r} is not in the history row; it has: {sorted(metrics)}")
        value = metrics[self.name]
        better = (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
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
