"""`TrainConfig`: every option of the engine, validated before anything is built.

A frozen dataclass, so a notebook cell can build one directly (`TrainConfig(epochs=3)`) and the
command line fills the same object from absl flags (`framework/flags.py`).
"""
import dataclasses
import re

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("none", "bf16", "fp16")
SCHEDULES = ("constant", "exponential", "cosine", "onecycle")
_TARGET = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


class ConfigError(ValueError):
    """A bad option: the message names the option, the bad value and what would be valid."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # Where everything is written: checkpoints, TensorBoard, history.json, result.json, exports.
    model_dir: str | None = None
    # Placement.
    strategy: str = "default"
    num_cpu_devices: int = 0          # >0: split the CPU into N logical devices (multi-replica on CPU)
    tpu: str = "local"                 # TPUClusterResolver name; "local" on Colab/Kaggle TPU VMs
    # Batch and length. The batch is GLOBAL: each replica gets global_batch_size / num_replicas.
    global_batch_size: int = 128
    eval_batch_size: int = 0           # 0: same as global_batch_size
    epochs: int = 10
    train_steps: int = 0               # >0: overrides epochs
    steps_per_loop: int = 500          # steps per compiled call (capped at the epoch length)
    steps_per_fetch: int = 0           # batches per next(iterator); 0 = auto (see run.py)
    # Optimisation (the optimizer itself comes from the trainer; the schedule lives here).
    learning_rate: float = 1e-3        # peak learning rate
    lr_schedule: str = "constant"
    warmup_steps: int = 0              # or warmup_fraction of all steps, whichever is larger
    warmup_fraction: float = 0.0
    onecycle_start: float = 0.0        # onecycle: LR at step 0 and at the last step, as fractions of
    onecycle_end: float = 0.0          # the peak (airbench: 0.2 and 0.07)
    decay_rate: float = 0.1            # exponential: multiply by this every decay_steps
    decay_steps: int = 0               # exponential: 0 means the whole run
    label_smoothing: float = 0.0
    # Lookahead (airbench): every N steps, average the weights into a ramped EMA and restart from it.
    lookahead_every: int = 0           # 0 = off; airbench: 5
    lookahead_decay: float = 0.95      # per step; the EMA's momentum is decay**N * (step/total)**3
    # Numerics and compilation.
    mixed_precision: str = "none"
    jit_compile: bool = False
    deterministic: bool = False
    seed: int = 0
    sync_batchnorm: bool = False
    # Evaluation at epoch ends: every N epochs (and always after the last); 0 = only after the last.
    eval_every_epochs: int = 1
    # Checkpoints and controls.
    checkpoint_every: int = 0          # steps; 0: at each epoch end
    keep_checkpoints: int = 3
    monitor: str = ""                  # eval metric for best/early-stop/plateau; "" = val/test accuracy
    early_stopping_patience: int = 0   # epochs without improvement before stopping; 0 = off
    reduce_lr_patience: int = 0        # epochs without improvement before lr *= reduce_lr_factor
    reduce_lr_factor: float = 0.5
    min_lr: float = 0.0
    target: str = ""                   # e.g. "test_accuracy>=0.94": stop once reached at an eval
    export: bool = True                # write final .keras model and SavedModel
    # Profiling: trace steps (START, END] with tf.profiler into model_dir/profile.
    profile_steps: str = ""

    def __post_init__(self):
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        for name in ("global_batch_size", "steps_per_loop", "keep_checkpoints"):
            _positive(name, getattr(self, name))
        for name in ("steps_per_fetch", "num_cpu_devices", "eval_batch_size", "epochs", "train_steps",
                     "warmup_steps", "decay_steps", "lookahead_every", "checkpoint_every", "eval_every_epochs",
                     "early_stopping_patience", "reduce_lr_patience", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be >= 0")
        if self.epochs == 0 and self.train_steps == 0:
            raise ConfigError("--epochs=0 and --train_steps=0: set one of them to a positive number")
        if not self.learning_rate > 0:
            raise ConfigError(f"--learning_rate={self.learning_rate}: must be > 0")
        for name in ("warmup_fraction", "label_smoothing", "onecycle_start", "onecycle_end", "lookahead_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be in [0, 1)")
        if (self.onecycle_start or self.onecycle_end) and self.lr_schedule != "onecycle":
            raise ConfigError(f"--onecycle_start/--onecycle_end need --lr_schedule=onecycle "
                              f"(got --lr_schedule={self.lr_schedule})")
        if not 0.0 < self.reduce_lr_factor < 1.0:
            raise ConfigError(f"--reduce_lr_factor={self.reduce_lr_factor}: must be in (0, 1)")
        if not 0.0 < self.decay_rate <= 1.0:
            raise ConfigError(f"--decay_rate={self.decay_rate}: must be in (0, 1]")
        if self.target:
            parse_target(self.target)
        if self.profile_steps:
            from framework.profiling import parse_profile_steps
            try:
                parse_profile_steps(self.profile_steps)
            except ValueError as err:
                raise ConfigError(str(err)) from err
        if self.strategy in ("default", "one_device", "tpu", "multi_worker") and self.num_cpu_devices > 1:
            raise ConfigError(f"--num_cpu_devices={self.num_cpu_devices} needs --strategy=mirrored "
                              f"(got --strategy={self.strategy})")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_target(text: str) -> tuple[str, str, float]:
    """'test_accuracy>=0.94' -> ('test_accuracy', '>=', 0.94)."""
    match = _TARGET.match(text)
    if not match:
        raise ConfigError(f"--target={text!r}: expected METRIC>=VALUE or METRIC<=VALUE, "
                          "e.g. --target=test_accuracy>=0.94")
    return match.group(1), match.group(2), float(match.group(3))


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"--{name}={value!r}: unknown; valid choices: {', '.join(choices)}")


def _positive(name, value):
    if not isinstance(value, int) or value <= 0:
        raise ConfigError(f"--{name}={value!r}: must be a positive integer")
