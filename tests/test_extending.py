"""Extending by one file: a new model in trainers/models/ and a new data source (a CSV of image
paths and labels) in framework/data/sources/ are each one file, usable by name from the command line
at once. The test writes the files, trains with each for a few steps, then removes them."""

import contextlib
import json
import os

import pytest
import tensorflow as tf
from cli_runs import ROOT, run_commands

# test_extending* write modules into the packages test_layers reads: one worker runs them in turn.
pytestmark = pytest.mark.xdist_group("package_files")

MODEL_NAME = f"zz_test_model_{os.getpid()}"
SOURCE_NAME = f"zz_test_csv_{os.getpid()}"

# A model: one hidden Dense layer; its own check refuses widths other than one number.
MODEL_FILE = f'''
import keras

from trainers.models import MODELS
from trainers.models.common import activations_problem, with_head


def check(name, image_size=None, widths=None, activation=None, **options):
    if widths is not None and len(widths) != 1:
        return "widths", f"{{name}} takes one width"
    problem = activation and activations_problem(name, activation)
    return ("activation", problem) if problem else None


@MODELS.register("{MODEL_NAME}", takes=("widths", "activation"), check=check, widths=(32,))
def build(layers, input_shape, num_classes, *, name, dropout, freeze_backbone, seed, **options):
    inputs = keras.Input(shape=input_shape, name=layers.name("images"))
    x = keras.layers.Flatten(name=layers.name("flatten"))(inputs)
    x = layers.dense(options.get("widths", (32,))[0], "hidden")(x)
    x = layers.activation(options.get("activation") or "relu", "hidden_act")(x)
    return with_head(inputs, x, layers, num_classes, name=name, freeze_backbone=freeze_backbone)
'''

# A data source: --data_dir holds train.csv and test.csv, rows "path,label" (paths relative to it).
SOURCE_FILE = f'''
import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from framework.data.datasets import ArrayDataset, DataError
from framework.data.sources import SOURCES


@SOURCES.register("{SOURCE_NAME}", reads_dir=True)
def load(data_dir, **options):
    splits = {{}}
    for split in ("train", "test"):
        path = os.path.join(data_dir, f"{{split}}.csv")
        if not os.path.isfile(path):
            raise DataError(f"{{path}}: no such file; --data_dir needs train.csv and test.csv")
        with open(path) as f:
            rows = list(csv.reader(f))
        images = [tf.io.decode_image(tf.io.read_file(os.path.join(data_dir, p))).numpy()
                  for p, _ in rows]
        splits[split] = np.stack(images), np.array([int(y) for _, y in rows], np.int32)
    classes = tuple(map(str, range(int(splits["train"][1].max()) + 1)))
    return ArrayDataset("{SOURCE_NAME}", *splits["train"], *splits["test"], classes)
'''


@contextlib.contextmanager
def _added(package_dir, module, text):
    """Writes `module`.py into the package (whole, then renamed: another process that lists the
    package meanwhile sees all of it or nothing); removes it, and its bytecode, afterwards."""
    path = os.path.join(ROOT, package_dir, f"{module}.py")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    try:
        yield
    finally:
        os.remove(path)
        cache = os.path.join(ROOT, package_dir, "__pycache__")
        for name in os.listdir(cache) if os.path.isdir(cache) else ():
            if name.startswith(f"{module}."):
                os.remove(os.path.join(cache, name))


def _write_csv_dataset(root, mnist):
    """MNIST digits as PNG files and two CSVs of their paths and labels."""
    for split, x, y in (
        ("train", mnist.x_train[:1024], mnist.y_train[:1024]),
        ("test", mnist.x_test[:500], mnist.y_test[:500]),
    ):
        os.makedirs(root / split)
        rows = []
        for i, (image, label) in enumerate(zip(x, y)):
            name = f"{split}/{i:05d}.png"
            tf.io.write_file(str(root / name), tf.io.encode_png(image))
            rows.append(f"{name},{int(label)}\n")
        (root / f"{split}.csv").write_text("".join(rows))


def _result(model_dir):
    with open(os.path.join(model_dir, "result.json")) as f:
        return json.load(f)


@pytest.mark.cli
@pytest.mark.slow
def test_a_model_file_and_a_source_file_train_by_name(tmp_path, mnist):
    _write_csv_dataset(tmp_path / "csv", mnist)
    common = ["--train_steps=120", "--global_batch_size=64", "--steps_per_loop=40", "--epochs=1"]
    commands = {
        "model": (
            "trainers.mnist",
            [
                f"--model={MODEL_NAME}",
                "--widths=48",
                "--train_examples=4096",
                "--test_examples=1000",
                f"--model_dir={tmp_path / 'model'}",
                *common,
            ],
        ),
        "source": (
            "trainers.mnist",
            [
                f"--dataset={SOURCE_NAME}",
                f"--data_dir={tmp_path / 'csv'}",
                "--model=mlp",
                "--widths=64",
                f"--model_dir={tmp_path / 'source'}",
                *common,
            ],
        ),
        # The new model's own check refuses before any data is read: one line, exit 2.
        "bad": (
            "trainers.mnist",
            [f"--model={MODEL_NAME}", "--widths=8,8", f"--model_dir={tmp_path / 'bad'}"],
        ),
    }
    with (
        _added("trainers/models", MODEL_NAME, MODEL_FILE),
        _added("framework/data/sources", SOURCE_NAME, SOURCE_FILE),
    ):
        runs = run_commands(commands)
    for key in ("model", "source"):
        code, _, err = runs[key]
        assert code == 0, err[-2000:]
    # Ten classes: chance is 0.1.
    assert _result(tmp_path / "model")["test_accuracy"] > 0.6
    assert _result(tmp_path / "source")["test_accuracy"] > 0.6
    code, _, err = runs["bad"]
    assert code == 2 and f"{MODEL_NAME} takes one width" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(ROOT, "trainers/models", f"{MODEL_NAME}.py"))
