"""The command line shared by the image trainers: absl flags -> configs -> run_experiment.

Every flag is validated before any data is read or model built; a bad one prints one line naming
the flag, the value and the valid choices, and exits with status 2.
"""
import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: hide its C++ start-up noise

from absl import app, flags, logging

from framework import ConfigError, NonFiniteLossError, TrainingInterrupted
from framework import flags as engine_flags
from framework.checkpointing import CheckpointError
from framework.data.datasets import DataError
from trainers.experiment import ExperimentConfig, default_model_dir, run_experiment

FLAGS = flags.FLAGS


def _define_experiment_flags(defaults):
    for field in dataclasses.fields(ExperimentConfig):
        default = defaults.get(field.name, field.default)
        if field.name in FLAGS:
            FLAGS.set_default(field.name, _flag_default(default))
            continue
        help_text = f"ExperimentConfig.{field.name}."
        if field.type == "tuple" or field.type is tuple:
            flags.DEFINE_list(field.name, _flag_default(default), help_text)
        elif field.type in ("bool", bool):
            flags.DEFINE_bool(field.name, default, help_text)
        elif field.type in ("int", int):
            flags.DEFINE_integer(field.name, default, help_text)
        elif field.type in ("float", float):
            flags.DEFINE_float(field.name, default, help_text)
        else:
            flags.DEFINE_string(field.name, default, help_text)


def _flag_default(value):
    return [str(v) for v in value] if isinstance(value, tuple) else value


def experiment_from_flags() -> ExperimentConfig:
    values = {}
    for field in dataclasses.fields(ExperimentConfig):
        value = FLAGS[field.name].value
        if field.type in ("tuple", tuple):
            converter = str if field.name == "eval_transforms" else int
            try:
                value = tuple(converter(v) for v in value or ())
            except ValueError as err:
                raise ConfigError(f"--{field.name}={','.join(value)}: expected integers, "
                                  f"e.g. --{field.name}=64,64") from err
        values[field.name] = value
    return ExperimentConfig(**values)


def main(name: str, defaults: dict, run=run_experiment, recipes: dict | None = None) -> None:
    """Entry point of `python -m trainers.<name>`: parses flags, runs, maps failures to exit codes.

    `recipes` maps a `--recipe` name to flag values that replace the defaults (flags given on the
    command line still win); "auto" picks "full" on a GPU/TPU and "fast" on a CPU.
    """
    engine_defaults = {k: v for k, v in defaults.items() if k in engine_flags.HELP or
                       k in {f.name for f in dataclasses.fields(engine_flags.TrainConfig)}}
    engine_flags.define_flags(**{"model_dir": default_model_dir(name), **engine_defaults})
    _define_experiment_flags(defaults)
    if "repeats" not in FLAGS:
        flags.DEFINE_integer("repeats", 1, "Train N fresh models (seeds seed..seed+N-1); report mean/std "
                             "of test accuracy and the logit- and probability-averaging ensembles.")
        flags.DEFINE_string("sweep", "", "A grid over flags, e.g. 'learning_rate=0.01,0.1;model=mlp,cnn' "
                            "(tuple values with /: widths=64/64,128); writes sweep.md and sweep.json.")
    if recipes and "recipe" not in FLAGS:
        flags.DEFINE_enum("recipe", "auto", ["auto", *recipes], "Training recipe: fast (a CPU in "
                          "minutes) or full (the longer GPU/TPU recipe); auto picks by hardware.")

    def _main(argv):
        import tensorflow as tf
        tf.get_logger().setLevel("WARNING")  # keep the console to our one line per loop
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}: flags are written --name=value")
        try:
            if recipes:
                _apply_recipe(recipes)
            exp = experiment_from_flags()
            config = engine_flags.config_from_flags()
            if FLAGS.sweep:
                from trainers.repeats import run_sweep
                run_sweep(exp, config, FLAGS.sweep, FLAGS.repeats)
                return
            if FLAGS.repeats != 1:
                from trainers.repeats import run_repeats
                print(json.dumps(run_repeats(exp, config, FLAGS.repeats), indent=1))
                return
            result = run(exp, config)
        except (ConfigError, DataError, CheckpointError) as err:
            fail(str(err))
        except NonFiniteLossError as err:
            logging.error("%s", err)
            sys.exit(1)
        except TrainingInterrupted as err:
            logging.warning("%s", err)
            sys.exit(128 + err.signum)
        summary = {k: v for k, v in result.items() if k != "config"}
        print(json.dumps(summary, indent=1, default=str))

    app.run(_main, flags_parser=_parse_flags)


def _apply_recipe(recipes):
    import tensorflow as tf
    name = FLAGS.recipe
    if name == "auto":
        name = "full" if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU") \
            else "fast"
    logging.info("recipe: %s", name)
    for flag, value in recipes[name].items():
        if not FLAGS[flag].present:  # the command line wins over the recipe
            FLAGS[flag].value = _flag_default(value)
    # A length given on the command line replaces the recipe's time budget.
    if (FLAGS['epochs'].present or FLAGS['train_steps'].present) and not FLAGS["train_minutes"].present:
        FLAGS.train_minutes = 0.0


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        fail(str(err))


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
