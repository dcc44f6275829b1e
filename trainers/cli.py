"""The command line of every trainer: absl flags -> recipes.configs -> the trainer's run function.

Every flag is validated before any data is read or model built; a bad one prints one line naming
the flag, the value and the valid choices, and exits with status 2. The flags and their help come
from the trainer's config dataclass and TrainConfig (framework/config_flags.py); the values from the
trainer's defaults and recipes (registered by trainers/<name>.py in trainers/recipes.py), with the
flags given on the command line over them, exactly as `recipes.configs(trainer, recipe, **flags)`
gives them to a notebook. Nothing here imports TensorFlow before the flags are parsed, so `--help`
answers at once, and TensorFlow's start-up lines are hidden unless `--verbose`.
"""

import contextlib
import dataclasses
import json
import sys

from absl import app, flags, logging

from framework import config_flags
from framework.config import ConfigError, TrainConfig
from framework.tf_startup import import_tensorflow
from framework.tpu_env import configure_pjrt
from trainers import recipes as recipes_lib

FLAGS = flags.FLAGS

# TrainConfig's options that a trainer's --help lists (the rest: --helpfull).
KEY_TRAIN_OPTIONS = (
    "model_dir",
    "strategy",
    "global_batch_size",
    "epochs",
    "train_steps",
    "learning_rate",
    "lr_schedule",
    "warmup_fraction",
    "mixed_precision",
    "jit_compile",
    "seed",
    "target",
    "fresh_start",
)


def define_flags(name: str, key_module: str | None = "__main__") -> None:
    """The flags of trainer `name`: its config class's and TrainConfig's fields with the trainer's
    defaults, and --recipe, --repeats, --sweep, --variants, --verbose. May be called again."""
    defaults = recipes_lib.defaults(name, resolve=False)
    config_cls = recipes_lib.config_class(name)
    exp_fields = {f.name for f in dataclasses.fields(config_cls)}
    # Values computed at run time (e.g. bf16 where it is fast) are shown as the fields' defaults.
    static = {
        k: v
        for k, v in defaults.items()
        if not (isinstance(v, str) and v in recipes_lib.AT_RUN_TIME)
    }
    config_flags.define_flags(
        config_cls,
        defaults={k: v for k, v in static.items() if k in exp_fields},
        key_module=key_module,
    )
    config_flags.define_flags(
        TrainConfig, defaults={k: v for k, v in static.items() if k not in exp_fields}
    )
    # absl's name for the main module
    module = sys.argv[0] if key_module == "__main__" else key_module
    own = {
        "repeats": lambda: flags.DEFINE_integer(
            "repeats",
            1,
            "Train N fresh models (seeds seed..seed+N-1); report the mean/std of every final "
            "metric (a classifier's: also the logit- and probability-averaging ensembles).",
        ),
        "sweep": lambda: flags.DEFINE_string(
            "sweep",
            "",
            "A grid over flags, e.g. 'learning_rate=0.01,0.1;model=mlp,cnn' (each value as its "
            "flag takes it); each cell --repeats times in model_dir/<cell>/repeat_<i>; "
            "writes sweep.md, sweep.json and compare.md/json/png.",
        ),
        "variants": lambda: flags.DEFINE_string(
            "variants",
            "",
            "Named variants over this command line's flags, one factor at a time, e.g. "
            "'baseline:;deeper:widths=64,64,64;slow:learning_rate=1e-4 epochs=5' (a "
            "variant's flags separated by spaces, each value as the flag takes it); each "
            "--repeats times in model_dir/<variant>/repeat_<i>; writes sweep.md, "
            "sweep.json and compare.md/json/png.",
        ),
        "verbose": lambda: flags.DEFINE_bool(
            "verbose", False, "Show TensorFlow's start-up and C++ info lines (hidden by default)."
        ),
    }
    if recipes_lib.names(name):
        own["recipe"] = lambda: flags.DEFINE_enum(
            "recipe",
            "auto",
            ["auto", *recipes_lib.names(name)],
            "Training recipe (trainers/recipes.py): "
            f"{', '.join(recipes_lib.names(name))}; auto picks full on a GPU/TPU, else fast.",
        )
    for flag_name, define in own.items():
        if flag_name not in FLAGS:
            define()
    if module:
        for flag_name in (*KEY_TRAIN_OPTIONS, *own):
            FLAGS.register_key_flag_for_module(module, FLAGS[flag_name])


def main(name: str) -> None:
    """Entry point of `python -m trainers.<name>`: parses flags, runs, maps failures to exit codes.

    The trainer is the one trainers/<name>.py registers (recipes.register): its config class, run
    function, defaults and recipes.
    """
    define_flags(name)

    def _main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}: flags are written --name=value")
        # TensorFlow finds a TPU VM's chips only if told before its import.
        if FLAGS.strategy == "tpu":
            try:
                configure_pjrt()
            except ConfigError as err:  # a bad TFLOOPS_TPU_RUNTIME: one line, exit 2
                fail(str(err))
        tf = import_tensorflow(verbose=FLAGS.verbose)
        if not FLAGS.verbose:
            tf.get_logger().setLevel("WARNING")  # keep the console to our one line per loop
        with exit_codes():
            exp, config = configs_from_flags(name)
            logging.info("%s", describe(exp, config))
            result = run(name, exp, config)
        if result is not None:
            summary = {k: v for k, v in result.items() if k != "config"}
            print(json.dumps(summary, indent=1, default=str))

    app.run(_main, flags_parser=parse_flags)


def run(name: str, exp, config: TrainConfig) -> dict | None:
    """What the command line asked for: a --sweep or --variants (its tables; None), --repeats (their
    summary) or one run (result.json's dict), each through the trainer's run function."""
    from trainers import repeats  # lazy: keeps TF out of --help

    if FLAGS.sweep or FLAGS.variants:
        repeats.sweep(
            name,
            FLAGS.recipe if "recipe" in FLAGS else None,
            grid=FLAGS.sweep,
            variants=FLAGS.variants,
            repeats=FLAGS.repeats,
            **given_options(name),
        )
        return None
    if FLAGS.repeats != 1:
        exports = repeats.exports_given(given_options(name))
        return repeats.run_repeats(exp, config, FLAGS.repeats, exports=exports, trainer=name)
    return recipes_lib.trainer_entry(name).fn(exp, config)


@contextlib.contextmanager
def exit_codes():
    """How a run's failures end the command: bad input (a flag, a combination, a file, a checkpoint
    of another run) one line and exit 2; a NaN exit 1 (the last good checkpoint kept); a signal
    128+N after its checkpoint. Every trainer's main runs inside it."""
    from framework import checkpointing, controller  # lazy: keeps TF out of --help
    from framework.data import datasets  # lazy: keeps TF out of --help

    try:
        yield
    except (ConfigError, datasets.DataError, checkpointing.CheckpointError) as err:
        fail(str(err))
    except controller.NonFiniteLossError as err:
        logging.error("%s", err)
        sys.exit(1)
    except controller.TrainingInterrupted as err:
        logging.warning("%s", err)
        sys.exit(128 + err.signum)


def configs_from_flags(name: str):
    """(ExperimentConfig, TrainConfig) for trainer `name`: its recipe with the flags given over
    it."""
    given = given_options(name)
    recipe = FLAGS.recipe if "recipe" in FLAGS else None
    if recipe:
        logging.info("recipe: %s", recipes_lib.pick(name, recipe, strategy=FLAGS.strategy))
    return recipes_lib.configs(name, recipe, **given)


def given_options(name: str) -> dict:
    """The options the command line gave (trainer `name`'s config's and TrainConfig's flags),
    parsed."""
    return {
        **config_flags.flag_dict(recipes_lib.config_class(name), given_only=True),
        **config_flags.flag_dict(TrainConfig, given_only=True),
    }


def describe(*configs) -> str:
    """One line: the options whose values differ from their fields' defaults (the trainer's and the
    recipe's choices, and the command line's); the whole configuration is in
    model_dir/run_config.json."""
    changed = []
    for config in configs:
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if value != field.default:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                changed.append(f"{field.name}={shown}")
    return "config (where not the default): " + " ".join(changed)


def parse_flags(argv):
    """absl's flags_parser: a bad flag is one line and exit 2; --help exits 0."""
    try:
        return FLAGS(argv)
    except flags.Error as err:
        fail(str(err))
    except SystemExit as done:
        if done.code == 1 and _asked_for_help(argv):
            sys.exit(0)  # absl exits 1 after --help; help that was asked for is a success
        raise


def _asked_for_help(argv) -> bool:
    names = {"-?", "-h", "--help", "--helpshort", "--helpfull", "--helpxml"}
    return any(arg.split("=")[0] in names for arg in argv[1:])


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
