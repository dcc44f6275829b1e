"""One configuration system (issue #18, points 6-11): flags from config dataclasses and back, their
help, the recipes API, inapplicable recipe values, the quiet start, the effective configuration."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from framework import config_flags
from framework.config import ConfigError, TrainConfig
from trainers import recipes
from trainers.experiment import ExperimentConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = ("mnist", "fashion_mnist", "cifar", "triplet")
NOISE = re.compile(r"onednn|cuda|absl::InitializeLog", re.IGNORECASE)
TINY = ["--train_examples=512", "--test_examples=256", "--train_steps=2", "--noexport"]


def _quiet_env():
    # The user's environment, without the suite's TF_CPP_MIN_LOG_LEVEL: the trainers must be quiet
    # alone.
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _python(*args, env=None, **kwargs):
    environment = _quiet_env()
    environment.update(PYTHONPATH=ROOT, **(env or {}))
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        **kwargs,
    )


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _flag_help(text: str) -> dict:
    """absl help text -> {flag name: its help}."""
    helps, name = {}, None
    for line in text.splitlines():
        match = re.match(r"^  --(?:\[no\])?(\w+): ?(.*)$", line)
        if match:
            name = match.group(1)
            helps[name] = match.group(2)
        elif (
            name
            and line.startswith("    ")
            and not re.fullmatch(r"\((default: .*|an? [a-z ]+)\)", line.strip())
        ):
            helps[name] += " " + line.strip()
        elif not line.startswith("    "):
            name = None
    return helps


# --- point 9: flags from dataclasses, with the help on the fields ---------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Toy:
    name: str = dataclasses.field(default="a", metadata={"help": "A name."})
    count: int = dataclasses.field(default=3, metadata={"help": "A count."})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "A rate."})
    on: bool = dataclasses.field(default=False, metadata={"help": "A switch."})
    sizes: tuple = dataclasses.field(default=(), metadata={"help": "Sizes."})
    words: tuple = dataclasses.field(default=(), metadata={"help": "Words.", "item": str})
    where: str | None = dataclasses.field(
        default=None, metadata={"help": "A place.", "advanced": True}
    )


def test_a_config_round_trips_through_flags():
    for config_cls, config in [
        (
            _Toy,
            _Toy(
                name="b", count=7, rate=0.25, on=True, sizes=(4, 5), words=("x", "y"), where="here"
            ),
        ),
        (
            ExperimentConfig,
            ExperimentConfig(
                dataset="cifar10",
                model="airbench",
                widths=(24, 96, 96),
                tta=True,
                tta_translate=1,
                classes=(3, 5),
                eval_transforms=("flip_ud", "invert"),
                optimizer="sgd",
                momentum=0.85,
                nesterov=True,
                label_smoothing=0.2,
            ),
        ),
        (
            TrainConfig,
            TrainConfig(
                model_dir="/tmp/x",
                epochs=2,
                learning_rate=0.1,
                lr_schedule="onecycle",
                onecycle_start=0.2,
                jit_compile=True,
                fresh_start=True,
            ),
        ),
    ]:
        # As defaults: the parsed flags give the config back.
        fv = flags.FlagValues()
        config_flags.define_flags(config_cls, defaults=dataclasses.asdict(config), flag_values=fv)
        fv(["prog"])
        assert config_flags.from_flags(config_cls, flag_values=fv) == config
        # On a command line over the fields' defaults: the same config.
        fv = flags.FlagValues()
        config_flags.define_flags(config_cls, flag_values=fv)
        argv = ["prog"]
        for field in dataclasses.fields(config_cls):
            value = getattr(config, field.name)
            if value != field.default:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                argv.append(f"--{field.name}={shown}")
        fv(argv)
        assert config_flags.from_flags(config_cls, flag_values=fv) == config
        assert config_flags.flag_dict(config_cls, flag_values=fv, given_only=True).keys() == {
            a[2:].split("=")[0] for a in argv[1:]
        }


def test_define_flags_again_updates_the_defaults_and_overrides_win():
    fv = flags.FlagValues()
    config_flags.define_flags(_Toy, flag_values=fv)
    config_flags.define_flags(_Toy, defaults={"count": 9, "sizes": (1, 2)}, flag_values=fv)
    fv(["prog"])
    assert config_flags.from_flags(_Toy, flag_values=fv) == _Toy(count=9, sizes=(1, 2))
    assert config_flags.from_flags(_Toy, flag_values=fv, count=1).count == 1
    with pytest.raises(ValueError, match="nope"):
        config_flags.define_flags(_Toy, defaults={"nope": 1}, flag_values=fv)


def test_a_bad_tuple_is_a_config_error_and_a_field_without_help_is_refused():
    fv = flags.FlagValues()
    config_flags.define_flags(_Toy, flag_values=fv)
    fv(["prog", "--sizes=4,x"])
    with pytest.raises(ConfigError, match="--sizes=4,x: expected integers"):
        config_flags.from_flags(_Toy, flag_values=fv)

    @dataclasses.dataclass
    class NoHelp:
        depth: int = 3

    with pytest.raises(ValueError, match="'depth' has no help"):
        config_flags.define_flags(NoHelp, flag_values=flags.FlagValues())


def test_key_flags_are_the_modules_and_advanced_ones_are_left_to_helpfull():
    fv = flags.FlagValues()
    config_flags.define_flags(_Toy, flag_values=fv, key_module="toy_main")
    keys = {f.name for f in fv.get_key_flags_for_module("toy_main")}
    assert {"name", "count", "sizes"} <= keys and "where" not in keys


@pytest.fixture(scope="module")
def trainer_help():
    """{trainer: (--help's flags, --helpfull's flags)}, every command started at once."""
    procs = {
        (name, kind): _python("-m", f"trainers.{name}", f"--{kind}")
        for name in TRAINERS
        for kind in ("help", "helpfull")
    }
    done = {key: _finish(proc) for key, proc in procs.items()}
    for (name, kind), (code, out, err) in done.items():
        assert code == 0, (name, kind, err[-2000:])
        assert not NOISE.search(out + err), (name, kind, (out + err)[:2000])
    return {
        name: (_flag_help(done[name, "help"][1]), _flag_help(done[name, "helpfull"][1]))
        for name in TRAINERS
    }


@pytest.mark.xdist_group("trainer_help")  # one worker runs the fixture
@pytest.mark.cli
def test_every_flag_of_every_trainer_has_real_help(trainer_help):
    for name, (short, full) in trainer_help.items():
        ours = {f.name for f in dataclasses.fields(TrainConfig)}
        assert ours <= set(full), (name, ours - set(full))
        for flag, text in full.items():
            assert not re.search(r"\w+Config\.\w+\.$", text), (name, flag, text)
        for flag in ours | (
            {f.name for f in dataclasses.fields(ExperimentConfig)} if name != "triplet" else set()
        ):
            assert len(full[flag]) > 12, (name, flag, full[flag])


@pytest.mark.xdist_group("trainer_help")  # one worker runs the fixture
@pytest.mark.cli
def test_help_lists_the_trainers_key_flags_and_helpfull_the_rest(trainer_help):
    short, full = trainer_help["cifar"]
    assert short["augment"].startswith("On-device augmentation: a named policy")
    assert {
        "recipe",
        "model",
        "widths",
        "optimizer",
        "epochs",
        "learning_rate",
        "model_dir",
        "verbose",
    } <= set(short)
    assert "keep_checkpoints" not in short and "keep_checkpoints" in full  # advanced
    assert "auto picks full on a GPU/TPU" in short["recipe"]
    short, full = trainer_help["triplet"]
    assert {"embedding_dim", "delta", "epochs"} <= set(short)
    # point 8: options live where they act, so the triplet trainer does not take them.
    assert "label_smoothing" not in full and "sync_batchnorm" not in full and "tta" not in full
    assert "label_smoothing" in trainer_help["mnist"][0]


def test_the_engine_config_holds_only_what_the_engine_reads():
    engine = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not {"label_smoothing", "sync_batchnorm"} & engine
    exp = ExperimentConfig(label_smoothing=0.2, sync_batchnorm=True)
    assert exp.label_smoothing == 0.2 and exp.sync_batchnorm
    with pytest.raises(ConfigError, match="--label_smoothing=1.0"):
        ExperimentConfig(label_smoothing=1.0)


# --- point 11: no TensorFlow for --help, no start-up noise ----------------------------------------


@pytest.mark.cli
def test_help_imports_no_tensorflow_and_prints_no_noise():
    code, out, err = _finish(_python("-m", "trainers.mnist", "--help"))
    assert code == 0 and "--augment:" in out
    assert not NOISE.search(out + err), (out + err)[:2000]
    script = (
        "import sys\n"
        "from absl import app\n"
        "from trainers import cifar, cli, mnist, recipes\n"
        "app.define_help_flags()\n"
        "cli.define_flags('cifar')\n"
        "cli.FLAGS(['cifar', '--model=cnn', '--widths=8,8,8,8'])\n"
        "recipes.defaults('cifar', resolve=False); recipes.names('cifar')\n"
        "try:\n"
        "    cli.parse_flags(['cifar', '--help'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    code, out, err = _finish(_python("-c", script))
    assert code == 0, err[-2000:]


# --- points 10, 6, 7: recipes, inapplicable recipe values, the effective configuration ------------


def test_recipes_api():
    assert recipes.names("cifar") == ("fast", "full") and recipes.names("mnist") == ()
    fast = recipes.get("cifar", "fast")
    assert (
        fast["widths"] == (24, 96, 96) and fast["momentum"] == 0.85 and fast["model"] == "airbench"
    )
    assert fast["mixed_precision"] in ("bf16", "none")  # resolved for this machine
    exp, config = recipes.configs("cifar", "full", learning_rate=0.5, widths=[32, 64, 64])
    assert exp.widths == (32, 64, 64) and exp.label_smoothing == 0.2 and exp.tta_translate == 1
    assert (
        config.learning_rate == 0.5
        and config.lookahead_every == 5
        and config.global_batch_size == 1024
    )
    exp, config = recipes.configs("cifar", "fast", smoke=True)
    assert (exp.train_examples, exp.test_examples, exp.train_minutes) == (512, 256, 0.0)
    assert config.train_steps == recipes.SMOKE["train_steps"] and not config.export
    exp, config = recipes.configs("mnist", epochs=2)
    assert exp.model == "cnn" and config.lr_schedule == "cosine" and config.epochs == 2
    exp, _ = recipes.configs("cifar", "fast", epochs=2)
    assert exp.train_minutes == 0.0  # a length given replaces the recipe's time budget
    with pytest.raises(
        ConfigError, match="--recipe='huge': unknown; valid choices: auto, fast, full"
    ):
        recipes.get("cifar", "huge")
    with pytest.raises(ConfigError, match="not options of mnist"):
        recipes.configs("mnist", learning_rat=0.1)


def test_recipe_values_that_do_not_apply_are_dropped_and_the_users_are_errors():
    exp, _ = recipes.configs("cifar", "fast", optimizer="adam")
    assert exp.optimizer == "adam" and exp.momentum == 0.0 and not exp.nesterov
    assert exp.weight_decay == 0.009  # applies to every optimizer: kept
    exp, _ = recipes.configs("cifar", "fast", optimizer="rmsprop")
    assert exp.momentum == 0.85 and not exp.nesterov
    exp, _ = recipes.configs("cifar", "fast", model="cnn")
    assert exp.widths == () and exp.activation == ""
    exp, _ = recipes.configs("cifar", "fast", model="cnn", widths=(8, 8, 8, 8))
    assert exp.widths == (8, 8, 8, 8)
    exp, _ = recipes.configs("cifar", "fast", tta=False)
    assert not exp.tta and exp.tta_translate == 0
    with pytest.raises(ConfigError, match=r"--momentum=0.9 does not apply to --optimizer=adam"):
        recipes.configs("cifar", "fast", optimizer="adam", momentum=0.9)
    with pytest.raises(ConfigError, match=r"--nesterov=True does not apply to --optimizer=rmsprop"):
        recipes.configs("cifar", "fast", optimizer="rmsprop", nesterov=True)
    with pytest.raises(ConfigError, match="--tta_translate=1 needs --tta"):
        recipes.configs("cifar", "fast", tta=False, tta_translate=1)
    # The recipe's one-cycle shape goes with its schedule: a constant LR drops it (it was an exit
    # 2).
    _, config = recipes.configs("cifar", "fast", lr_schedule="constant")
    assert (config.onecycle_start, config.onecycle_end, config.warmup_fraction) == (0.0, 0.0, 0.0)
    _, config = recipes.configs("cifar", "fast", lr_schedule="cosine")
    assert config.warmup_fraction == 0.23 and config.onecycle_start == 0.0
    with pytest.raises(
        ConfigError, match=r"--onecycle_end=0.1 does not apply to --lr_schedule=constant"
    ):
        recipes.configs("cifar", "fast", lr_schedule="constant", onecycle_end=0.1)
    with pytest.raises(
        ConfigError, match=r"--warmup_steps/--warmup_fraction need --lr_schedule=cosine or onecycle"
    ):
        TrainConfig(warmup_fraction=0.1)  # a constant LR has no warm-up: it was silently ignored


def test_keras_defaults_unless_a_trainer_says_otherwise():
    from trainers import experiment, optimizers

    assert ExperimentConfig().momentum == 0.0
    assert optimizers.build_optimizer("sgd", 0.1).momentum == 0.0
    assert experiment.optimizer_fn_for(ExperimentConfig(optimizer="rmsprop"))(0.1).momentum == 0.0
    with pytest.raises(ValueError, match="`momentum` .* does not apply to adam"):
        optimizers.build_optimizer("adam", 0.1, momentum=0.9)
    # A notebook's config says so too; the recipes module's table (no Keras import) is the
    # optimizers'.
    with pytest.raises(
        ConfigError, match=r"--nesterov=True does not apply to --optimizer=adam \(only to sgd\)"
    ):
        ExperimentConfig(optimizer="adam", nesterov=True)
    assert recipes.OPTIMIZER_OPTIONS == optimizers.TAKES_MOMENTUM


@pytest.fixture(scope="module")
def cifar_runs(tmp_path_factory, data_dir):
    """The three commands of issue #18 (point 6) at tiny size and two user errors, started at
    once."""
    commands = {
        "adam": ["--optimizer=adam"],
        "cnn": ["--model=cnn"],
        "notta": ["--notta"],
        "user_momentum": ["--optimizer=adam", "--momentum=0.9"],
        "user_translate": ["--notta", "--tta_translate=1"],
    }
    root = tmp_path_factory.mktemp("cifar_runs")
    # "adam" in a process of its own (its quiet start-up is checked); the rest after one import,
    # forked.
    from cli_runs import run_commands

    alone = _python(
        "-m", "trainers.cifar", *commands["adam"], *TINY, f"--model_dir={root / 'adam'}"
    )
    done = run_commands(
        {
            key: ("trainers.cifar", [*args, *TINY, f"--model_dir={root / key}"])
            for key, args in commands.items()
            if key != "adam"
        },
        env=_quiet_env(),
    )
    return root, commands, {**done, "adam": _finish(alone)}


@pytest.mark.xdist_group(
    "cifar_runs"
)  # one worker runs the fixture's 5 commands (not one per worker)
@pytest.mark.parametrize(
    "key,dropped",
    [
        (
            "adam",
            ["momentum=0.85 does not apply to --optimizer=adam", "nesterov=True does not apply"],
        ),
        (
            "cnn",
            ["widths=24,96,96 is for --model=airbench, not --model=cnn", "activation=gelu is for"],
        ),
        ("notta", ["tta_translate=1 needs --tta"]),
    ],
)
@pytest.mark.cli
def test_cifar_commands_drop_what_does_not_apply_and_train(cifar_runs, key, dropped):
    root, commands, done = cifar_runs
    code, out, err = done[key]
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and not NOISE.search(out + err), err[:2000]
    assert json.loads(out[out.index("{") :])["train_steps"] == 2
    lines = [line for line in err.splitlines() if "do not apply here, dropped" in line]
    assert len(lines) == 1 and all(d in lines[0] for d in dropped), lines
    # point 7: the effective configuration, one line, what differs from the fields' defaults ...
    config_lines = [line for line in err.splitlines() if "config (where not the default):" in line]
    assert len(config_lines) == 1
    shown = dict(item.split("=", 1) for item in config_lines[0].split("default): ")[1].split())
    assert (
        shown.get("model", "cnn") == ("cnn" if key == "cnn" else "airbench")
        and shown["label_smoothing"] == "0.2"
    )
    assert ("momentum" in shown) == (key != "adam")
    assert ("tta" in shown) == ("tta_translate" in shown) == (key != "notta")
    # ... and the whole of it in the run directory, equal to what the Python API gives for the same
    # flags.
    recorded = json.loads((root / key / "run_config.json").read_text())["config"]
    given = dict(a[2:].split("=", 1) if "=" in a else (a[4:], False) for a in commands[key] + TINY)
    given = {k: (int(v) if str(v).isdigit() else v) for k, v in given.items()}
    exp, config = recipes.configs("cifar", "auto", **given, model_dir=str(root / key))
    expected = json.loads(json.dumps({**config.to_dict(), **exp.to_dict()}))
    assert {k: v for k, v in recorded.items() if k in expected} == expected


@pytest.mark.xdist_group("cifar_runs")
@pytest.mark.parametrize(
    "key,message",
    [
        (
            "user_momentum",
            "error: --momentum=0.9 does not apply to --optimizer=adam (only to sgd and rmsprop)",
        ),
        ("user_translate", "error: --tta_translate=1 needs --tta"),
    ],
)
@pytest.mark.cli
def test_a_users_value_that_does_not_apply_is_one_line_exit_2(cifar_runs, key, message):
    code, out, err = cifar_runs[2][key]
    assert code == 2 and err.strip().splitlines()[-1] == message and "Traceback" not in err
    assert [line for line in err.splitlines() if not line.startswith("I")] == [message]


@pytest.mark.cli
def test_verbose_shows_tensorflows_start_up_lines():
    code, out, err = _finish(
        _python(
            "-m",
            "trainers.mnist",
            "--verbose",
            "--model=resnet1000",
            "--model_dir=/nonexistent/never",
        )
    )
    assert code == 2 and "error: --model='resnet1000'" in err
    assert NOISE.search(err), err[:2000]
