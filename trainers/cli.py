"""The command line shared by the image trainers: absl flags -> recipes.configs -> run_experiment.

Every flag is validated before any data is read or model built; a bad one prints one line naming
the flag, the value and the valid choices, and exits with status 2. The flags and their help come
from the config dataclasses (framework/config_flags.py); the values from trainers/recipes.py, with
the flags given on the command line over them, exactly as `recipes.configs(trainer, recipe, **flags)`
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
from framework.tf_startup import import_tensorflow  # noqa: F401 (trainers call cli.import_tensorflow)
from trainers import recipes as recipes_lib
from trainers.experiment import ExperimentConfig

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
    """The flags of trainer `name`: ExperimentConfig's and TrainConfig's fields with the trainer's
    defaults, and --recipe, --repeats, --sweep, --verbose. May be called again."""
    defaults = recipes_lib.defaults(name, resolve=False)
    exp_fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    # Values computed at run time (e.g. bf16 where it is fast) are shown as the fields' defaults.
    static = {
        k: v
        for k, v in defaults.items()
        if not (isinstance(v, str) and v in recipes_lib.AT_RUN_TIME)
    }
    config_flags.define_flags(
        ExperimentConfig,
        defaults={k: v for k, v in static.items() if k in exp_fields},
        key_module=key_module,
    )
    config_flags.define_flags(
        TrainConfig, defaults={k: v for k, v in static.items() if k not in exp_fields}
    )
    module = (
        sys.argv[0] if key_module == "__main__" else key_module
    )  # absl's name for the main module
    own = {
        "repeats": lambda: flags.DEFINE_integer(
            "repeats",
            1,
            "Train N fresh models (seeds seed..seed+N-1); report mean/std of test accuracy "
            "and the logit- and probability-averaging ensembles.",
        ),
        "sweep": lambda: flags.DEFINE_string(
            "sweep",
            "",
            "A grid over flags, e.g. 'learning_rate=0.01,0.1;model=mlp,cnn' (each value as its "
            "flag takes it); each cell --repeats times in model_dir/<cell>/repeat_<i>; writes sweep.md, "
            "sweep.json and compare.md/json/png.",
        ),
        "variants": lambda: flags.DEFINE_string(
            "variants",
            "",
            "Named variants over this command line's flags, one factor at a time, e.g. "
            "'baseline:;deeper:widths=64,64,64;slow:learning_rate=1e-4 epochs=5' (a variant's flags "
            "separated by spaces, each value as the flag takes it); each --repeats times in "
            "model_dir/<variant>/repeat_<i>; writes sweep.md, sweep.json and compare.md/json/png.",
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


def main(name: str, defaults: dict | None = None, run=None, recipes: dict | None = None) -> None:
    """Entry point of `python -m trainers.<name>`: parses flags, runs, maps failures to exit codes.

    The trainer's defaults and recipes are trainers/recipes.py's; `defaults`/`recipes` register a
    trainer that is not there (a new file calling `cli.main("mine", DEFAULTS)`).
    """
    if defaults is not None and name not in recipes_lib.DEFAULTS:
        recipes_lib.DEFAULTS[name] = dict(defaults)
        if recipes:
            recipes_lib.RECIPES[name] = dict(recipes)
    define_flags(name)

    def _main(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}: flags are written --name=value")
        if (
            FLAGS.strategy == "tpu"
        ):  # TensorFlow finds a TPU VM's chips only if told before its import
            from framework.tpu_env import configure_pjrt

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
            if FLAGS.sweep or FLAGS.variants:
                from trainers.repeats import sweep

                sweep(
                    name,
                    FLAGS.recipe if "recipe" in FLAGS else None,
                    grid=FLAGS.sweep,
                    variants=FLAGS.variants,
                    repeats=FLAGS.repeats,
                    **given_options(),
                )
                return
            if FLAGS.repeats != 1:
                from trainers.repeats import exports_given, run_repeats

                print(
                    json.dumps(
                        run_repeats(
                            exp, config, FLAGS.repeats, exports=exports_given(given_options())
                        ),
                        indent=1,
                    )
                )
                return
            if run is None:
                from trainers.experiment import run_experiment

                result = run_experiment(exp, config)
            else:
                result = run(exp, config)
        summary = {k: v for k, v in result.items() if k != "config"}
        print(json.dumps(summary, indent=1, default=str))

    app.run(_main, flags_parser=parse_flags)


@contextlib.contextmanager
def exit_codes():
    """How a run's failures end the command: bad input (a flag, a combination, a file, a checkpoint of
    another run) one line and exit 2; a NaN exit 1 (the last good checkpoint kept); a signal 128+N
    after its checkpoint. Every trainer's main runs inside it."""
    from framework import NonFiniteLossError, TrainingInterrupted
    from framework.checkpointing import CheckpointError
    from framework.data.datasets import DataError

    try:
        yield
    except (ConfigError, DataError, CheckpointError) as err:
        fail(str(err))
    except NonFiniteLossError as err:
        logging.error("%s", err)
        sys.exit(1)
    except TrainingInterrupted as err:
        logging.warning("%s", err)
        sys.exit(128 + err.signum)


def configs_from_flags(name: str):
    """(ExperimentConfig, TrainConfig) for trainer `name`: its recipe with the flags given over it."""
    given = given_options()
    recipe = FLAGS.recipe if "recipe" in FLAGS else None
    if recipe:
        logging.info("recipe: %s", recipes_lib.pick(name, recipe, strategy=FLAGS.strategy))
    return recipes_lib.configs(name, recipe, **given)


def given_options() -> dict:
    """The options the command line gave (ExperimentConfig's and TrainConfig's flags), parsed."""
    return {
        **config_flags.flag_dict(ExperimentConfig, given_only=True),
        **config_flags.flag_dict(TrainConfig, given_only=True),
    }


def describe(*configs) -> str:
    """One line: the options whose values differ from their fields' defaults (the trainer's and the
    recipe's choices, and the command line's); the whole configuration is in model_dir/run_config.json."""
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
