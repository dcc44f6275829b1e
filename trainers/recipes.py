"""Each trainer's defaults and named recipes, one Python API for the command line, the benchmarks,
the tests and notebooks.

    from trainers import recipes
    recipes.names("cifar")                               # ('fast', 'full')
    recipes.get("cifar", "fast")                         # {option: value}: defaults, then the
                                                         recipe
    exp, config = recipes.configs("cifar", "fast", model_dir="/content/runs/cifar")
    run_experiment(exp, config)                          # = python -m trainers.cifar --recipe=fast
    recipes.configs("cifar", "fast", smoke=True)         # the same run at test size (the tests'
    smoke runs)

`configs(trainer, recipe, **options)` is also what `python -m trainers.<name>` does with the flags
given on its command line. The options given win over the recipe, the recipe over the trainer's
defaults, those over the fields' defaults (Keras' where Keras has one). A recipe value that does not
apply to the chosen model or optimizer (the cifar recipe's momentum with --optimizer=adam, its
widths with --model=cnn, its --tta_translate with --notta) is dropped with one info line; an option
given that does not apply is a ConfigError.

A trainer's defaults and recipes are in its own file (trainers/cifar.py), which registers them here
with its config class and run function (`register`); this module names no trainer.
No TensorFlow is imported here until a recipe is resolved ("auto" looks at the hardware).
"""

import dataclasses
import os
from typing import Callable

from absl import logging

from framework.config import ConfigError, TrainConfig
from framework.registry import Registry


def _bf16_if_fast(strategy: str | None = None):
    # TPUs compute in bf16; before the TPU system starts TensorFlow lists no TPU.
    if strategy == "tpu":
        return "bf16"
    from framework.precision import bf16_is_fast  # lazy: keeps TF out of --help

    return "bf16" if bf16_is_fast() else "none"


# Values computed when a recipe is resolved (they look at the hardware, so they import TensorFlow).
AT_RUN_TIME = {"bf16_if_fast": _bf16_if_fast}

# trainer name -> its entry: the run function `run(config, train_config) -> result dict`, with
#   config    its config dataclass (the fields beside TrainConfig's; ExperimentConfig for images)
#   defaults  {option: value}: what `python -m trainers.<name>` runs without flags
#   recipes   {recipe name: {option: value}} over the defaults ("auto", the command line's default,
#             picks "full" on a GPU/TPU and "fast" on a CPU)
#   check_run_dir(config, train_config)  refuses a --model_dir of other settings (repeats, sweeps)
#   metric    the result that ranks a sweep's cells
# Each trainer registers itself in its own file (trainers/mnist.py: `recipes.register(...)`), found
# by its module's name: trainers/<name>.py.
TRAINERS = Registry("trainer", package="trainers")


def register(
    name: str,
    *,
    config,
    run: Callable,
    defaults: dict,
    recipes: dict | None = None,
    check_run_dir: Callable,
    metric: str = "test_accuracy",
) -> None:
    """Declares trainer `name` (called by trainers/<name>.py, beside its defaults and recipes)."""
    TRAINERS.register(
        name,
        config=config,
        defaults=dict(defaults),
        recipes=dict(recipes or {}),
        check_run_dir=check_run_dir,
        metric=metric,
    )(run)


def trainer_entry(name: str):
    """The registry entry of trainer `name` (trainers/<name>.py is imported for it, and only it, so
    that `--help` imports no other trainer); a name that is no trainer is a ConfigError."""
    if name not in TRAINERS:
        raise ConfigError(
            f"{name!r}: no such trainer; valid choices: {', '.join(TRAINERS.names())}"
        )
    return TRAINERS.get(name)


# Over any recipe: a few steps on a few examples, for tests and for trying a notebook cell.
SMOKE = dict(
    train_examples=512,
    test_examples=256,
    global_batch_size=64,
    epochs=1,
    train_steps=4,
    steps_per_loop=2,
    train_minutes=0.0,
    export=False,
)

# Options tuned for one optimizer or model: they go with it (optimizers.TAKES_MOMENTUM, spelled out
# here so that this module imports no Keras).
OPTIMIZER_OPTIONS = {"momentum": ("sgd", "rmsprop"), "nesterov": ("sgd",)}
SCHEDULE_OPTIONS = {
    "onecycle_start": ("onecycle",),
    "onecycle_end": ("onecycle",),
    "warmup_fraction": ("cosine", "onecycle"),
    "warmup_steps": ("cosine", "onecycle"),
}
# A recipe's architecture is its model's: dropped when another --model is given.
MODEL_OPTIONS = ("widths", "dense_widths", "padding", "pool", "activation", "budget_ladder")


def trainers() -> tuple:
    """Every trainer's name (imports every module of trainers/ to find them)."""
    return tuple(TRAINERS.names())


def names(name: str) -> tuple:
    """The recipes of trainer `name` (() for a trainer that has only its defaults)."""
    return tuple(trainer_entry(name).recipes)


def defaults(name: str, *, resolve: bool = True, strategy: str | None = None) -> dict:
    """The trainer's defaults; `resolve=False` leaves hardware-dependent values named (no
    TensorFlow)."""
    values = {"model_dir": os.path.join("runs", name), **trainer_entry(name).defaults}
    return _resolve(values, strategy) if resolve else values


def get(
    trainer: str, name: str | None = "auto", *, smoke: bool = False, strategy: str | None = None
) -> dict:
    """The trainer's defaults, then recipe `name` over them (None or "" for the defaults alone;
    "auto": "full" on a GPU/TPU, "fast" on a CPU), then SMOKE if `smoke`. `strategy` "tpu" means a
    TPU even before TensorFlow can list it."""
    values = defaults(trainer, strategy=strategy)
    name = pick(trainer, name, strategy=strategy)
    if name:
        values.update(trainer_entry(trainer).recipes[name])
    if smoke:
        values.update(SMOKE)
    return values


def pick(trainer: str, name: str | None, *, strategy: str | None = None) -> str | None:
    """The recipe `name` stands for: "auto" -> "full" on a GPU/TPU, "fast" on a CPU."""
    recipes = names(trainer)
    if not name or not recipes:
        if name and name != "auto":
            raise ConfigError(f"--recipe={name}: {trainer} has no recipes")
        return None
    if name == "auto":
        import tensorflow as tf  # lazy: keeps TF out of --help

        accelerated = (
            strategy == "tpu"
            or tf.config.list_physical_devices("GPU")
            or tf.config.list_physical_devices("TPU")
        )
        return "full" if "full" in recipes and accelerated else recipes[0]
    if name not in recipes:
        raise ConfigError(f"--recipe={name!r}: unknown; valid choices: auto, {', '.join(recipes)}")
    return name


def configs(trainer: str, name: str | None = "auto", *, smoke: bool = False, **options):
    """(the trainer's config, TrainConfig) for recipe `name` with `options` over it: the run that
    `python -m trainers.<trainer> --recipe=<name> --<option>=<value> ...` makes."""
    values = resolve_options(trainer, name, smoke=smoke, **options)
    config_cls = config_class(trainer)
    own = {f.name for f in dataclasses.fields(config_cls)}
    train = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - own - train)
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)}: not options of {trainer} ({config_cls.__name__} or TrainConfig)"
        )
    return (
        config_cls(**{k: v for k, v in values.items() if k in own}),
        TrainConfig(**{k: v for k, v in values.items() if k in train}),
    )


def resolve_options(
    trainer: str, name: str | None = "auto", *, smoke: bool = False, **options
) -> dict:
    """The recipe's values with `options` (the user's) over them, inapplicable recipe values
    dropped."""
    values = get(trainer, name, smoke=smoke, strategy=options.get("strategy"))
    planned = dict(values)
    fields = [f for cls in (config_class(trainer), TrainConfig) for f in dataclasses.fields(cls)]
    field_defaults = {f.name: f.default for f in fields}
    options = {
        k: tuple(v) if isinstance(field_defaults.get(k), tuple) and isinstance(v, list) else v
        for k, v in options.items()
    }
    values.update(options)
    # A length given replaces the recipe's time budget.
    if (
        ("epochs" in options or "train_steps" in options)
        and "train_minutes" in field_defaults
        and "train_minutes" not in options
    ):
        values["train_minutes"] = 0.0
    # The time budget's ladder picks widths and epochs: only when the user gave neither.
    if ("widths" in options or "epochs" in options) and values.get("budget_ladder"):
        if options.get("budget_ladder"):
            raise ConfigError(
                "--budget_ladder picks the widths and epochs: give it without --widths and --epochs"
            )
        values["budget_ladder"] = False
    dropped = _drop_inapplicable(values, planned, given=options, field_defaults=field_defaults)
    if dropped:
        logging.info("recipe values that do not apply here, dropped: %s", "; ".join(dropped))
    return values


def config_class(name: str):
    """The trainer's config dataclass (the options beside TrainConfig's)."""
    return trainer_entry(name).config


def _drop_inapplicable(
    values: dict, planned: dict, *, given: dict, field_defaults: dict
) -> list[str]:
    """Resets the recipe's values that do not apply to the chosen optimizer/model/tta to the fields'
    defaults; an option the user gave that does not apply is a ConfigError. Returns what was
    dropped."""
    dropped = []

    def drop(name, reason):
        if name in given:
            raise ConfigError(f"--{name}={_show(given[name])} {reason}")
        dropped.append(f"{name}={_show(values[name])} {reason}")
        values[name] = field_defaults[name]

    optimizer = values.get("optimizer")
    for name, takers in OPTIMIZER_OPTIONS.items():
        if (
            name in field_defaults
            and optimizer not in takers
            and values.get(name, field_defaults[name]) != field_defaults[name]
        ):
            drop(
                name, f"does not apply to --optimizer={optimizer} (only to {' and '.join(takers)})"
            )
    if "model" in given and given["model"] != planned.get("model"):
        for name in MODEL_OPTIONS:
            if (
                name in field_defaults
                and name not in given
                and values.get(name, field_defaults[name]) != field_defaults[name]
            ):
                drop(name, f"is for --model={planned.get('model')}, not --model={given['model']}")
    if values.get("tta_translate") and not values.get("tta"):
        drop("tta_translate", "needs --tta")
    schedule = values.get("lr_schedule", "constant")
    for name, takers in SCHEDULE_OPTIONS.items():
        if (
            name in field_defaults
            and schedule not in takers
            and values.get(name, field_defaults[name]) != field_defaults[name]
        ):
            drop(
                name, f"does not apply to --lr_schedule={schedule} (only to {' and '.join(takers)})"
            )
    return dropped


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _resolve(values: dict, strategy: str | None = None) -> dict:
    return {
        k: AT_RUN_TIME[v](strategy) if isinstance(v, str) and v in AT_RUN_TIME else v
        for k, v in values.items()
    }
