"""Every bad flag or combination fails before training: one line "error: ...", exit 2, no traceback.

The in-process tables check the messages cheaply; the CLI table runs a representative command of
each kind as a user does (each process spends its ~8 s importing TensorFlow, so they start all at
once).
"""

import os
import pathlib

import numpy as np
import pytest

from framework import ConfigError, TrainConfig
from trainers.experiment import ExperimentConfig, check_for_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ExperimentConfig refuses these when it is built (a notebook cell too), before any data is read.
BAD_CONFIGS = [
    (
        dict(model="mlp", widths=(64, 0)),
        r"--widths=64,0: widths must be positive \(or 0 alone: no hidden layer\)",
    ),
    (
        dict(model="cnn", pool="1,4"),
        r"--pool=1,4 with --model=cnn: --pool=1,4: 'every', 'none', or distinct conv "
        r"numbers from 1 to 3",
    ),
    (
        dict(model="cnn", padding="full"),
        r"--padding=full with --model=cnn: --padding=full: one of valid, same",
    ),
    (
        dict(model="resnet9", dense_widths=(64,)),
        r"--dense_widths=64 with --model=resnet9: --dense_widths only applies",
    ),
    (
        dict(model="mlp", widths=(64,), activation="relu,sigmoid"),
        r"--model=mlp --widths=64 --activation=relu,sigmoid: "
        r"2 activations for 1 hidden layers",
    ),
    (
        dict(model="no/such/file.py:build"),
        r"--model=no/such/file.py:build: no such file no/such/file.py",
    ),
    (
        dict(model="trainers.models:no_such_builder"),
        r"trainers.models has no function 'no_such_builder'",
    ),
    (dict(model="missing.keras"), r"--model=missing.keras: no such file"),
    (
        dict(model="mlp", init_from="/no/such/run"),
        r"--init_from=/no/such/run: no such run directory or .keras file",
    ),
    (
        dict(task="ranking"),
        r"--task='ranking': unknown; valid choices: binary, classification, regression",
    ),
    (dict(loss="mae"), r"--loss=mae is for --task=regression"),
    (
        dict(task="binary", classes=(1, 2, 3)),
        r"--task=binary needs two classes, not --classes=1,2,3",
    ),
    (dict(task="regression", augment="mixup"), r"mixes labels .*not for --task=regression"),
    (
        dict(input_range="0,255"),
        r"--input_range='0,255': unknown; valid choices: 0,1, -0.5,0.5, -1,1",
    ),
    (
        dict(input_range="-1,1", augment="normalize"),
        r"normalizes and --input_range=-1,1 rescales the pixels",
    ),
    (dict(model="resnet9", widths=(8, 8)), r"--widths=8,8 with --model=resnet9: resnet9 takes 4"),
    (dict(model="airbench", widths=(8, 8, 8, 8)), r"airbench takes 3 positive widths"),
    (
        dict(model="efficientnet_b0", widths=(16,)),
        r"--widths=16 with --model=efficientnet_b0: .* cannot be set",
    ),
    (
        dict(model="efficientnet_b0", activation="gelu"),
        r"--activation=gelu .* keeps its own activation",
    ),
    (dict(activation="bogus"), r"--activation=bogus with --model=cnn: unknown activation 'bogus'"),
    (
        dict(pretrained=True),
        r"--pretrained with --model=cnn: only efficientnet_b0, efficientnetv2_b0 have",
    ),
    (
        dict(model="cnn", image_size=8),
        r"--image_size=8 with --model=cnn: cnn needs images of at least 18x18",
    ),
    (
        dict(augment="cutout:sz=8"),
        r"--augment='cutout:sz=8': op 'cutout' has no option 'sz'; its options: size",
    ),
    (dict(augment="rotate:fill_mod=wrap"), r"op 'rotate' has no option 'fill_mod'; .*fill_mode"),
    (
        dict(augment="affine:max_degrees=10,prob=1.5"),
        r"--augment='affine:max_degrees=10,prob=1.5': affine: `prob` "
        r"\(1.5\) must be a number in \[0, 1\]",
    ),
    (
        dict(augment="flip,shera:max_degrees=10"),
        r"unknown augmentation op 'shera'; valid ops: .*'shear'",
    ),
    (dict(momentum=-0.5), r"--momentum=-0.5: must be in \[0, 1\)"),
    (dict(weight_decay=-1.0), r"--weight_decay=-1.0: must be >= 0"),
    (dict(permute_pixels=-3), r"--permute_pixels=-3"),
]


@pytest.mark.parametrize("kwargs,match", BAD_CONFIGS)
def test_experiment_config_refuses(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ExperimentConfig(**kwargs)


# What only the data's image shape decides: checked once the data is loaded, before anything is
# built.
BAD_FOR_28x28 = [
    (
        dict(augment="crop:padding=-1"),
        r"--augment='crop:padding=-1': crop padding=-1: `padding` \(-1\) must be >= 0",
    ),
    (
        dict(augment="flip,cutout:size=40"),
        r"cutout size=40: `size` \(40\) must fit in the 28x28 image",
    ),
    (
        dict(augment="cutout:size=big"),
        r"cutout size=big: `size` \('big'\) must be an int or \(height, width\)",
    ),
    (dict(augment="brightness:max_delta=-1"), r"`max_delta` \(-1\) must be >= 0"),
    (
        dict(augment="rotate:max_degrees=x"),
        r"rotate max_degrees=x: an option value of the wrong type",
    ),
    (dict(augment="mixup:alpha=0"), r"mixup alpha=0: `alpha` \(0\) must be > 0"),
    (
        dict(augment="crop_to:size=32"),
        r"crop_to size=32: `size` \(32\) must be between 1 and the 28x28 image",
    ),
    (
        dict(augment="shear:max_degrees=90"),
        r"shear max_degrees=90: `max_shear` \(90\) must be below 90 degrees",
    ),
    (
        dict(augment="brightness_scale:factors=(1.2,0.8)"),
        r"`factors` \(\(1.2, 0.8\)\) must be \(low, high\)",
    ),
    (
        dict(model="mlp", tta=True, tta_translate=28),
        r"--tta_translate=28: must be smaller than the 28x28 images",
    ),
    (
        dict(model="cnn", widths=(32, 64, 64, 64, 64)),
        r"--model=cnn --widths=32,64,64,64,64 on 28x28 images: cnn "
        r"needs images of at least 78x78 pixels",
    ),
]


@pytest.mark.parametrize("kwargs,match", BAD_FOR_28x28)
def test_checks_against_the_data(kwargs, match):
    import augment

    exp = ExperimentConfig(**kwargs)
    policy = (
        augment.get_policy(exp.augment, num_classes=10, image_shape=(28, 28, 1))
        if exp.augment != "none"
        else None
    )
    with pytest.raises(ConfigError, match=match):
        check_for_data(exp, (28, 28, 1), policy)


def test_checks_against_the_data_pass_good_settings():
    import augment

    with pytest.raises(ConfigError, match="cnn needs images of at least 18x18"):
        check_for_data(ExperimentConfig(model="cnn"), (12, 16, 1), None)
    with pytest.raises(ConfigError, match="--eval_transforms=rot90 needs square images, not 28x32"):
        check_for_data(ExperimentConfig(eval_transforms=("flip_lr", "rot90")), (28, 32, 3), None)
    check_for_data(ExperimentConfig(eval_transforms=("rot90",)), (32, 32, 3), None)
    for good in (
        "standard",
        "strong",
        "flip,crop:padding=2,cutout:size=8,mixup",
        "rotate:fill_mode=wrap",
    ):
        check_for_data(
            ExperimentConfig(augment=good),
            (28, 28, 1),
            augment.get_policy(good, num_classes=10, image_shape=(28, 28, 1)),
        )


def test_triplet_refuses_bad_values_before_reading_data(tmp_path):
    from trainers import triplet

    cfg = TrainConfig(model_dir=str(tmp_path / "run"), train_steps=2)
    for kwargs, match in (
        (dict(model="resnet1000"), r"--model='resnet1000': unknown; valid choices: airbench, cnn"),
        (dict(embedding_dim=0), r"--embedding_dim=0: must be >= 1"),
        (dict(scale=0.0), r"--scale=0.0: must be > 0"),
        (dict(num_train=0), r"--num_train=0: must be >= 1"),
        (dict(dataset="fec"), r"--dataset=fec needs --fec_csv=FILE and --fec_images=DIR"),
    ):
        with pytest.raises(ConfigError, match=match):
            triplet.run_triplet(cfg, **kwargs)
    assert not (tmp_path / "run").exists()


def test_pretrained_weights_offline_are_a_one_line_data_error(monkeypatch):
    """--pretrained without the internet: the command line maps a DataError to one line and exit
    2."""
    import keras

    from framework.data.datasets import DataError
    from trainers import models

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what keras.utils.get_file raises

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DataError, match="Could not download the ImageNet weights") as error:
        models.build_model(
            "efficientnet_b0", input_shape=(32, 32, 3), num_classes=10, pretrained=True
        )
    assert "\n" not in str(error.value) and "--pretrained" in str(error.value)


@pytest.fixture(scope="module")
def fec_files(tmp_path_factory):
    """A tiny FEC layout: two faces on disk, a good CSV, one missing a column, one naming a missing
    face."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("fec")
    (root / "images").mkdir()
    for face in ("f1", "f2"):
        (root / "images" / f"{face}.jpg").write_bytes(
            tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
        )
    header = "face1,face2,face3,votes1,votes2,votes3,subset\n"
    (root / "no_column.csv").write_text(header.replace(",votes3", "") + "f1,f2,f1,1,0,train\n")
    (root / "missing_face.csv").write_text(header + "f1,f2,f1,1,0,0,train\nf1,f2,f3,0,0,1,train\n")
    return root


def _fec(root, csv):
    return [
        "--dataset=fec",
        f"--fec_csv={root / csv}",
        f"--fec_images={root / 'images'}",
        "--image_size=32",
    ]


# (trainer, flags, what the one line says). Commands the notebooks ran; recipe-related ones are
# elsewhere.
BAD_COMMANDS = [
    (
        "mnist",
        ["--model=cnn", "--widths=32,64,64,64,64"],
        "--widths=32,64,64,64,64 on 28x28 images: cnn needs",
    ),
    (
        "mnist",
        ["--model=tests/no_such_model.py:build"],
        "--model=tests/no_such_model.py:build: no such file",
    ),
    ("mnist", ["--augment=cutout:sz=8"], "op 'cutout' has no option 'sz'"),
    ("mnist", ["--augment=crop:padding=-1"], "`padding` (-1) must be >= 0"),
    ("mnist", ["--image_size=8"], "cnn needs images of at least 18x18"),
    ("mnist", ["--classes=0,12"], "outside [0, 9]"),
    ("mnist", ["--pretrained"], "--pretrained with --model=cnn"),
    ("mnist", ["--sweep=model_dir=a,b"], "--sweep: model_dir cannot be swept"),
    (
        "mnist",
        ["--variants=baseline:;deeper:widths=64,64 nosuch=1"],
        "--variants: variant 'deeper': Unknown command line flag 'nosuch'",
    ),
    (
        "mnist",
        ["--data_service=localhost:5050"],
        "--data_service='localhost:5050': expected grpc://HOST:PORT",
    ),
    ("mnist", ["--target=los<=0.4"], "--target='los<=0.4': 'los' is not a metric of this run"),
    (
        "mnist",
        ["--max_image_pixels=-1"],
        "--max_image_pixels=-1: give a pixel count, or 0 for no limit",
    ),
    ("triplet", ["--model=resnet1000"], "--model='resnet1000': unknown; valid choices"),
    ("triplet", ["--embedding_dim=0"], "--embedding_dim=0: must be >= 1"),
    ("triplet", "fec:missing.csv", "missing.csv not found"),
    ("triplet", "fec:no_column.csv", "missing column(s) votes3"),
    ("triplet", "fec:missing_face.csv", "f3.jpg (face3 on line 3 of"),
]


@pytest.fixture(scope="module")
def bad_command_runs(fec_files, data_dir, tmp_path_factory):
    """Every BAD_COMMANDS run, at once after one TensorFlow import (tests/cli_runs.py): (exit code,
    stderr, model_dir)."""
    from cli_runs import run_commands

    commands, model_dirs = {}, {}
    for i, (trainer, args, _) in enumerate(BAD_COMMANDS):
        if isinstance(args, str):
            args = _fec(fec_files, args.split(":", 1)[1])
        model_dirs[i] = tmp_path_factory.mktemp("bad") / "run"
        commands[i] = (
            f"trainers.{trainer}",
            [*args, "--train_steps=2", f"--model_dir={model_dirs[i]}"],
        )
    return {i: (code, err, model_dirs[i]) for i, (code, _, err) in run_commands(commands).items()}


@pytest.mark.xdist_group(
    "bad_flag_runs"
)  # one worker starts them all, with tests/test_trainers.py's
@pytest.mark.parametrize(
    "index",
    range(len(BAD_COMMANDS)),
    ids=[f"{t}{' ' + ' '.join(a) if isinstance(a, list) else ' ' + a}" for t, a, _ in BAD_COMMANDS],
)
@pytest.mark.cli
def test_cli_bad_input_exits_2_with_one_line(index, bad_command_runs):
    returncode, stderr, model_dir = bad_command_runs[index]
    needle = BAD_COMMANDS[index][2]
    lines = [
        line for line in stderr.splitlines() if not _tensorflow_noise(line) and not _log_line(line)
    ]
    assert returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not (pathlib.Path(model_dir) / "checkpoints").exists()  # nothing trained


def _tensorflow_noise(line: str) -> bool:
    """TensorFlow's C++ start-up lines (another change silences them; the tests do not depend on
    it)."""
    return (
        line[:5] in ("I0000", "W0000", "E0000")
        or "oneDNN" in line
        or "cuda" in line.lower()
        or "absl::InitializeLog" in line
        or "rebuild TensorFlow" in line
        or line.startswith("To enable the following instructions")
        or not line.strip()
    )


def _log_line(line: str) -> bool:
    """absl's INFO lines ('I1202 05:48:14.551791 ... cli.py:91] config ...'), which are not
    errors."""
    return len(line) > 5 and line[0] == "I" and line[1:5].isdigit()
