"""`TrainConfig`: every option of the engine, validated before anything is built.

A frozen dataclass, so a notebook cell can build one directly (`TrainConfig(epochs=3)`) and the
command line fills the same object from absl flags (`framework/config_flags.py`). Each field's help
text is on the field (`option(default, help)`): it is the flag's `--help`.
"""

import dataclasses
import re

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("none", "bf16", "fp16")
SCHEDULES = ("constant", "exponential", "cosine", "onecycle")
_TARGET = re.compile(r"^\s*([A-Za-z0-9_]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")
_ADDRESS = re.compile(r"^grpc://(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


class ConfigError(ValueError):
    """A bad option: the message names the option, the bad value and what would be valid."""


def option(default, help: str, *, advanced: bool = False, **metadata):
    """A config field with its flag's help text; `advanced` ones are listed by --helpfull only."""
    return dataclasses.field(
        default=default, metadata={"help": help, "advanced": advanced, **metadata}
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # Where everything is written: checkpoints, TensorBoard, history.json, result.json, exports.
    model_dir: str | None = option(
        None,
        "Output folder: checkpoints, TensorBoard, history.json, result.json, "
        "run_config.json (the full configuration), model.keras.",
    )
    # Placement.
    strategy: str = option("default", f"tf.distribute strategy: {', '.join(STRATEGIES)}.")
    num_cpu_devices: int = option(
        0,
        "With --strategy=mirrored on a CPU: split it into N logical devices "
        "(replicas); 0: one device.",
        advanced=True,
    )
    tpu: str = option(
        "local", "TPU name for TPUClusterResolver ('local' on Colab/Kaggle TPU VMs).", advanced=True
    )
    gpu_memory_growth: bool = option(
        True,
        "GPU memory grows as needed, so processes can share a GPU; --nogpu_memory_growth maps "
        "it all at the start.",
        advanced=True,
    )
    data_service: str = option(
        "",
        "grpc://HOST:PORT of a tf.data service dispatcher: its data workers make the "
        "training input (the batches' order then depends on them; framework/data_service.py). "
        "python -m framework.launch --data_workers=N starts some here.",
        advanced=True,
    )
    # Batch and length. The batch is GLOBAL: each replica gets global_batch_size / num_replicas.
    global_batch_size: int = option(
        128, "Examples per step over all replicas (each gets global/replicas)."
    )
    eval_batch_size: int = option(
        0, "Global evaluation batch (0: same as --global_batch_size).", advanced=True
    )
    epochs: int = option(10, "Passes over the training set.")
    train_steps: int = option(0, "Total steps; overrides --epochs when > 0.")
    steps_per_loop: int = option(
        500,
        "Steps per compiled call (Python runs only between loops; capped at the epoch length).",
        advanced=True,
    )
    steps_per_fetch: int = option(
        0,
        "Batches per next(iterator) (0: automatic, a divisor of every loop length).",
        advanced=True,
    )
    # Optimisation (the optimizer itself comes from the trainer; the schedule lives here).
    learning_rate: float = option(1e-3, "Peak learning rate (for the global batch).")
    lr_schedule: str = option("constant", f"Learning-rate schedule: {', '.join(SCHEDULES)}.")
    warmup_steps: int = option(
        0, "Linear warm-up steps (cosine, onecycle); the larger of this and --warmup_fraction wins."
    )
    warmup_fraction: float = option(
        0.0, "Warm-up as a fraction of all steps (the larger of the two wins)."
    )
    onecycle_start: float = option(
        0.0, "onecycle: LR at the first step as a fraction of the peak (airbench: 0.2)."
    )
    onecycle_end: float = option(
        0.0, "onecycle: LR at the last step as a fraction of the peak (airbench: 0.07)."
    )
    decay_rate: float = option(
        0.1, "exponential: multiply the LR by this every --decay_steps.", advanced=True
    )
    decay_steps: int = option(
        0, "exponential: decay period in steps (0: the whole run).", advanced=True
    )
    # Lookahead (airbench): every N steps, average the weights into a ramped EMA and restart from
    # it.
    lookahead_every: int = option(
        0, "Lookahead every N steps (airbench: 5): weights <- EMA of weights; 0 = off."
    )
    lookahead_decay: float = option(
        0.95,
        "Lookahead EMA decay per step; the EMA's momentum is "
        "decay**N * (step/total)**3 (airbench: 0.95).",
        advanced=True,
    )
    # Numerics and compilation.
    mixed_precision: str = option(
        "none", f"{', '.join(PRECISIONS)}: bf16 or fp16 compute with float32 weights and logits."
    )
    jit_compile: bool = option(False, "Compile the step with XLA.")
    deterministic: bool = option(
        False,
        "Deterministic ops (tf.config.experimental.enable_op_determinism): bit-exact resume.",
        advanced=True,
    )
    seed: int = option(0, "Run seed: weights, data order, augmentation draws.")
    # Evaluation at epoch ends: every N epochs (and always after the last); 0 = only after the last.
    eval_every_epochs: int = option(
        1,
        "Evaluate every N epochs and after the last (0: only after the last); "
        "best checkpoint, early stop, plateau and target act at evaluations.",
    )
    eval_splits: tuple = option(
        (),
        "Splits evaluated at each evaluation, all logged in history.json: train, "
        "val, test, or a half of one (test_a, test_b: the first and second half of the "
        "test set, in its order); '' = val if there is one, else test.",
        item=str,
    )
    eval_at_start: bool = option(
        False,
        "Also evaluate the --eval_splits at step 0, before any training (the "
        "history row of epoch 0; the actions do not act on it).",
    )
    # Checkpoints and controls.
    checkpoint_every: int = option(
        0, "Checkpoint every N steps (0: at each epoch end).", advanced=True
    )
    keep_checkpoints: int = option(
        3, "Checkpoints kept in model_dir (the oldest are deleted).", advanced=True
    )
    monitor: str = option(
        "",
        "Metric for best checkpoint, early stopping and plateau: a column of the "
        "history rows, i.e. an evaluation metric as <split>_<metric> (test_accuracy) or a "
        "train metric's epoch mean by its bare name (loss); '' = val/test accuracy.",
        advanced=True,
    )
    early_stopping_patience: int = option(
        0, "Evaluations without improvement before stopping; 0 = off.", advanced=True
    )
    reduce_lr_patience: int = option(
        0,
        "Evaluations without improvement before lr *= --reduce_lr_factor; 0 = off.",
        advanced=True,
    )
    reduce_lr_factor: float = option(0.5, "Plateau: multiply the LR by this.", advanced=True)
    min_lr: float = option(0.0, "Plateau: never reduce the LR below this.", advanced=True)
    target: str = option(
        "",
        "Stop at the first evaluation whose history row meets it, METRIC>=VALUE or "
        "METRIC<=VALUE: a train metric's epoch mean by its bare name (loss<=0.4, the running "
        "mean over the epoch's steps), or an evaluation as <split>_<metric> (test_accuracy>=0.94, "
        "val_loss<=0.3; train_loss: the training set evaluated, needs --eval_splits=train,...). "
        "An unknown name is refused before training.",
    )
    callbacks: str = option(
        "",
        "package.module:fn or path/to/file.py:fn returning a list of Keras callbacks, run as "
        "fit runs them (on_train_batch_* once per compiled loop); checked before training.",
    )
    export: bool = option(True, "Write the final model as .keras and SavedModel.", advanced=True)
    fresh_start: bool = option(
        False,
        "A --model_dir used before with another configuration: move its files "
        "aside and start afresh there (they are kept, never deleted).",
    )
    # Profiling: trace steps (START, END] with tf.profiler into model_dir/profile.
    profile_steps: str = option(
        "",
        "Trace steps START,END (after START, up to END) with tf.profiler into model_dir/profile.",
        advanced=True,
    )

    def __post_init__(self):
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        for name in ("global_batch_size", "steps_per_loop", "keep_checkpoints"):
            _positive(name, getattr(self, name))
        for name in (
            "steps_per_fetch",
            "num_cpu_devices",
            "eval_batch_size",
            "epochs",
            "train_steps",
            "warmup_steps",
            "decay_steps",
            "lookahead_every",
            "checkpoint_every",
            "eval_every_epochs",
            "early_stopping_patience",
            "reduce_lr_patience",
            "seed",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be >= 0")
        if self.epochs == 0 and self.train_steps == 0:
            raise ConfigError(
                "--epochs=0 and --train_steps=0: set one of them to a positive number"
            )
        if not self.learning_rate > 0:
            raise ConfigError(f"--learning_rate={self.learning_rate}: must be > 0")
        for name in ("warmup_fraction", "onecycle_start", "onecycle_end", "lookahead_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be in [0, 1)")
        if (self.onecycle_start or self.onecycle_end) and self.lr_schedule != "onecycle":
            raise ConfigError(
                f"--onecycle_start/--onecycle_end need --lr_schedule=onecycle "
                f"(got --lr_schedule={self.lr_schedule})"
            )
        if (self.warmup_steps or self.warmup_fraction) and self.lr_schedule not in (
            "cosine",
            "onecycle",
        ):
            raise ConfigError(
                f"--warmup_steps/--warmup_fraction need --lr_schedule=cosine or onecycle "
                f"(got --lr_schedule={self.lr_schedule}, which has no warm-up)"
            )
        if not 0.0 < self.reduce_lr_factor < 1.0:
            raise ConfigError(f"--reduce_lr_factor={self.reduce_lr_factor}: must be in (0, 1)")
        if not 0.0 < self.decay_rate <= 1.0:
            raise ConfigError(f"--decay_rate={self.decay_rate}: must be in (0, 1]")
        if self.target:
            parse_target(self.target)
        for split in self.eval_splits:
            if (
                not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", split)
                or self.eval_splits.count(split) > 1
            ):
                raise ConfigError(
                    f"--eval_splits={','.join(self.eval_splits)}: {split!r} must be a distinct "
                    "split name (train, val, test, test_a, test_b, ...)"
                )
        if self.data_service:
            parse_address(self.data_service)
        if self.profile_steps:
            from framework.profiling import parse_profile_steps  # lazy: keeps TF out of --help

            try:
                parse_profile_steps(self.profile_steps)
            except ValueError as err:
                raise ConfigError(str(err)) from err
        if (
            self.strategy in ("default", "one_device", "tpu", "multi_worker")
            and self.num_cpu_devices > 1
        ):
            raise ConfigError(
                f"--num_cpu_devices={self.num_cpu_devices} needs --strategy=mirrored "
                f"(got --strategy={self.strategy})"
            )
        if self.jit_compile and self.strategy in ("mirrored", "multi_worker"):
            # TF's "merge_call called while defining a new graph" (and keras#21366 with fp16): it
            # fails on replicas, so it is refused here rather than left to fail after the model is
            # built.
            raise ConfigError(
                f"--jit_compile with --strategy={self.strategy}: XLA-compiling the replicated "
                "step fails in TensorFlow 2.21; drop --jit_compile, or use --strategy=default|"
                "one_device"
            )

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_target(text: str) -> tuple[str, str, float]:
    """'test_accuracy>=0.94' -> ('test_accuracy', '>=', 0.94)."""
    match = _TARGET.match(text)
    if not match:
        raise ConfigError(
            f"--target={text!r}: expected METRIC>=VALUE or METRIC<=VALUE, "
            "e.g. --target=test_accuracy>=0.94"
        )
    return match.group(1), match.group(2), float(match.group(3))


def parse_address(text: str) -> tuple[str, int]:
    """--data_service's 'grpc://host:port' -> (host, port); anything else is a ConfigError naming
    the flag. Checked with the other options here; framework/data_service.py connects to it."""
    match = _ADDRESS.match(text or "")
    if not match or not 0 < int(match["port"]) < 65536:
        raise ConfigError(
            f"--data_service={text!r}: expected grpc://HOST:PORT, the tf.data service "
            "dispatcher's address (e.g. grpc://localhost:5050)"
        )
    return match["host"], int(match["port"])


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"--{name}={value!r}: unknown; valid choices: {', '.join(choices)}")


def _positive(name, value):
    if not isinstance(value, int) or value <= 0:
        raise ConfigError(f"--{name}={value!r}: must be a positive integer")
