"""Input-pipeline versus step: classify a run like the TF Profiler's input-pipeline analyzer does,
and capture a trace of chosen steps with tf.profiler for TensorBoard's profile plugin."""

import os

import tensorflow as tf
from absl import logging

HIGHLY_INPUT_BOUND = 0.20  # the TF Profiler calls a run "highly input-bound" above 20% input wait
NOT_INPUT_BOUND = 0.05  # ... and "not input-bound" below 5%
# When the step runs on the host's CPU, tf.data's decode threads take the step's cores while it
# computes, so the wait in next() shows only part of what the input costs: the step itself runs
# slower beside the decode (benchmarks/reports/input_vs_step/folder). There the thresholds are
# halved.
HOST_CPU_SCALE = 0.5


def classify(input_wait_fraction: float, *, step_on_host_cpu: bool = False) -> str:
    """'input-bound', 'partly input-bound' or 'step-bound' from the share of loop time spent in
    next()."""
    scale = HOST_CPU_SCALE if step_on_host_cpu else 1.0
    if input_wait_fraction >= HIGHLY_INPUT_BOUND * scale:
        return "input-bound"
    if input_wait_fraction < NOT_INPUT_BOUND * scale:
        return "step-bound"
    return "partly input-bound"


def step_on_host_cpu(strategy) -> bool:
    """Whether every replica of `strategy` computes on a CPU (the one tf.data runs on)."""
    try:
        devices = strategy.extended.worker_devices
    except (
        RuntimeError
    ):  # the default strategy: TensorFlow places the step on a GPU if there is one
        return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    return all("CPU" in device.upper() for device in devices)


def parse_profile_steps(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        start, end = (int(v) for v in text.split(","))
    except ValueError:
        start = end = -1
    if not 0 <= start < end:
        raise ValueError(
            f"--profile_steps={text!r}: expected START,END with 0 <= START < END, e.g. 10,20"
        )
    return start, end


class ProfileWindow:
    """Traces steps (start, end]: the controller ends loops at both boundaries."""

    def __init__(self, steps: tuple[int, int] | None, model_dir: str | None):
        self.steps = steps
        self.logdir = os.path.join(model_dir, "profile") if (steps and model_dir) else None
        self.active = False

    def boundaries(self) -> tuple[int, ...]:
        return self.steps if self.logdir else ()

    def before_loop(self, step: int) -> None:
        if self.logdir and step == self.steps[0] and not self.active:
            tf.profiler.experimental.start(self.logdir)
            self.active = True

    def after_loop(self, step: int) -> None:
        if self.active and step >= self.steps[1]:
            tf.profiler.experimental.stop()
            self.active = False
            logging.info(
                "profile of steps %d-%d written to %s (TensorBoard > Profile)",
                self.steps[0] + 1,
                self.steps[1],
                self.logdir,
            )

    def close(self) -> None:
        if self.active:
            tf.profiler.experimental.stop()
            self.active = False
