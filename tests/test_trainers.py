"""Each trainer for a few steps on the shared data, as a user runs it (in-process and from the
CLI)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from framework import ConfigError, TrainConfig
from trainers import triplet
from trainers.experiment import ExperimentConfig, run_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, **kw):
    base = dict(
        model_dir=str(tmp_path), global_batch_size=64, epochs=1, learning_rate=1e-3, export=False
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
@pytest.mark.slow
def test_mnist_cnn_learns(tmp_path, strategy, data_dir):
    cfg = _config(tmp_path, strategy=strategy, num_cpu_devices=2 if strategy == "mirrored" else 0)
    result = run_experiment(
        ExperimentConfig(dataset="mnist", model="cnn", train_examples=4096, test_examples=2000), cfg
    )
    assert result["num_replicas"] == (2 if strategy == "mirrored" else 1)
    assert result["test_accuracy"] > 0.6  # chance is 0.1


@pytest.mark.slow
def test_cifar_resnet9_learns_with_augmentation_tta_and_plots(tmp_path, data_dir):
    exp = ExperimentConfig(
        dataset="cifar10",
        model="resnet9",
        widths=(8, 16, 16, 32),
        augment="standard",
        tta=True,
        train_examples=1024,
        test_examples=1000,
        plot=True,
        optimizer="sgd",
        nesterov=True,
        momentum=0.9,
        label_smoothing=0.2,
    )
    cfg = _config(
        tmp_path,
        train_steps=32,
        lr_schedule="onecycle",
        learning_rate=0.2,
        mixed_precision="bf16",
        strategy="mirrored",
        num_cpu_devices=2,
    )
    result = run_experiment(exp, cfg)
    assert (
        result["train_steps"] == 32 and result["test_accuracy"] > 0.15
    )  # chance 0.1; 0.21 measured
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step"] == [16, 32] and history["test_loss"][1] < history["test_loss"][0]
    # The plots are images of something: two curves (train blue, test orange), feature maps in
    # colour.
    curves, activations = _png(tmp_path / "curves.png"), _png(tmp_path / "activations.png")
    assert (
        curves.shape[0] >= 300 and curves.shape[1] >= 2 * curves.shape[0]
    )  # two panels side by side
    for rgb in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours
        assert (curves[..., :3] == rgb).all(-1).sum() > 100, rgb
    assert min(activations.shape[:2]) >= 300
    assert (
        len(np.unique(activations[..., :3].reshape(-1, 3), axis=0)) > 200
    )  # not blank, not one map


@pytest.mark.slow
def test_a_subclassed_conv_model_trains_and_plots_its_curves_without_feature_maps(
    tmp_path, data_dir
):
    import keras

    class Net(keras.Model):  # call() is Python: no layer graph to probe for feature maps
        def __init__(self, num_classes):
            super().__init__()
            self.conv = keras.layers.Conv2D(8, 3, activation="relu")
            self.pool = keras.layers.Flatten()
            self.head = keras.layers.Dense(num_classes)

        def call(self, x):
            return self.head(self.pool(self.conv(x)))

    exp = ExperimentConfig(
        dataset="mnist",
        model=lambda input_shape, num_classes: Net(num_classes),
        plot=True,
        train_examples=1024,
        test_examples=500,
    )
    result = run_experiment(exp, _config(tmp_path, train_steps=16, learning_rate=3e-3))
    assert result["train_steps"] == 16 and result["test_loss"] < 2.3  # chance: ln 10 = 2.303
    assert (tmp_path / "curves.png").exists() and not (tmp_path / "activations.png").exists()


def _png(path):
    import tensorflow as tf

    return tf.io.decode_png(path.read_bytes()).numpy()


@pytest.mark.slow
def test_cifar_airbench_learns_on_two_replicas_with_alternating_flip_and_mirror_translate_tta(
    tmp_path, data_dir
):
    exp = ExperimentConfig(
        dataset="cifar10",
        model="airbench",
        widths=(16, 32, 32),
        train_examples=2048,
        test_examples=1000,
        augment="crop:padding=2",
        alternating_flip=True,
        tta=True,
        tta_translate=1,
        optimizer="sgd",
        nesterov=True,
        momentum=0.85,
        weight_decay=0.009,
        label_smoothing=0.2,
    )
    cfg = _config(
        tmp_path,
        epochs=4,
        global_batch_size=128,
        lr_schedule="onecycle",
        warmup_fraction=0.23,
        learning_rate=0.2,
        strategy="mirrored",
        num_cpu_devices=2,
        eval_every_epochs=0,
    )
    result = run_experiment(exp, cfg)
    assert result["num_replicas"] == 2
    assert result["test_accuracy"] > 0.3  # chance is 0.1; 0.373 measured (64 steps)


@pytest.mark.slow
def test_train_minutes_fixes_the_steps_before_training_and_a_resume_reuses_them(
    tmp_path, data_dir, monkeypatch
):
    from trainers import time_budget

    exp = ExperimentConfig(
        dataset="mnist", model="mlp", train_examples=4096, test_examples=1000, train_minutes=0.001
    )
    result = run_experiment(exp, _config(tmp_path, epochs=3))
    decided = json.loads((tmp_path / time_budget.BUDGET_FILE).read_text())
    assert (
        1 <= result["train_steps"] == decided["train_steps"] < 3 * 64
    )  # 0.06 s is less than 3 epochs
    assert result["config"]["time_budget"]["examples_per_sec"] == decided["examples_per_sec"] > 0

    def must_not_measure(**kwargs):
        raise AssertionError("a resumed run must reuse time_budget.json")

    monkeypatch.setattr(time_budget, "measure_examples_per_sec", must_not_measure)
    again = run_experiment(exp, _config(tmp_path, epochs=3))
    assert again["train_steps"] == decided["train_steps"]

    generous = dataclasses.replace(exp, train_minutes=60.0)  # --epochs caps the budget
    monkeypatch.setattr(time_budget, "measure_examples_per_sec", lambda **kwargs: 1e4)
    capped = run_experiment(generous, _config(tmp_path / "capped", epochs=3))
    assert capped["train_steps"] == 3 * 64


@pytest.mark.slow
def test_robustness_transforms_and_pixel_permutation(tmp_path, data_dir):
    exp = ExperimentConfig(
        dataset="mnist",
        model="mlp",
        train_examples=4096,
        eval_transforms=("flip_ud", "invert"),
        permute_pixels=0,
    )
    result = run_experiment(exp, _config(tmp_path, epochs=2))
    assert result["test_accuracy"] > 0.7  # a dense net does not care about pixel order
    assert result["test_invert_accuracy"] < result["test_accuracy"] - 0.2
    saved = json.loads((tmp_path / "result.json").read_text())
    assert "test_flip_ud_accuracy" in saved


@pytest.mark.slow
def test_subsets_binary_task_with_validation(tmp_path, data_dir):
    exp = ExperimentConfig(
        dataset="mnist", model="mlp", classes=(0, 1), image_size=6, validation_split=0.2
    )
    result = run_experiment(exp, _config(tmp_path, epochs=1))
    history = json.loads((tmp_path / "history.json").read_text())
    assert "val_accuracy" in history and result["test_accuracy"] > 0.9  # 0 vs 1 is easy even at 6x6


@pytest.mark.slow
def test_triplet_trainer_learns(tmp_path, data_dir):
    cfg = _config(tmp_path, epochs=1, monitor="test_triplet_accuracy")
    result = triplet.run_triplet(cfg, dataset="mnist", num_train=2048, num_test=512)
    assert result["test_triplet_accuracy"] > 0.7  # chance is 1/3


def test_experiment_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="--model='resnet1000'.*valid choices"):
        ExperimentConfig(model="resnet1000")
    with pytest.raises(ConfigError, match="--augment='twirl'"):
        ExperimentConfig(augment="twirl")
    with pytest.raises(ConfigError, match="--classes=3"):
        ExperimentConfig(classes=(3,))
    with pytest.raises(ConfigError, match="--test_examples=-1: must be >= 0"):
        ExperimentConfig(test_examples=-1)
    with pytest.raises(ConfigError, match="--train_minutes=-1"):
        ExperimentConfig(train_minutes=-1.0)
    with pytest.raises(ConfigError, match="--tta_translate=1: .*needs --tta"):
        ExperimentConfig(tta_translate=1)
    for policy in ("flip,crop:padding=2", "standard"):
        with pytest.raises(
            ConfigError,
            match=f"--alternating_flip replaces the random flip of --augment='{policy}'",
        ):
            ExperimentConfig(augment=policy, alternating_flip=True)


BAD_FLAGS = [
    (["--model=resnet1000"], "--model='resnet1000': unknown; valid choices"),
    (["--global_batch_size=-4"], "--global_batch_size=-4"),
    (
        ["--strategy=mirrored", "--num_cpu_devices=2", "--global_batch_size=33"],
        "not divisible by the 2",
    ),
    (["--widths=64,x"], "--widths=64,x"),
    (["--tta_translate=-2", "--tta"], "--tta_translate=-2"),
    (["--test_examples=-5"], "--test_examples=-5: must be >= 0"),
    (["--no_such_flag=1"], "no_such_flag"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(data_dir):
    """Every BAD_FLAGS command, run at once after one TensorFlow import (tests/cli_runs.py)."""
    from cli_runs import run_commands

    done = run_commands(
        {
            tuple(args): ("trainers.mnist", [*args, "--model_dir=/nonexistent/never"])
            for args, _ in BAD_FLAGS
        }
    )
    return {args: (code, err) for args, (code, _, err) in done.items()}


@pytest.mark.xdist_group("bad_flag_runs")  # one worker starts them all (make test runs 2 workers)
@pytest.mark.parametrize("args,needle", BAD_FLAGS)
@pytest.mark.cli
def test_cli_bad_flags_exit_2_with_one_line(args, needle, bad_flag_runs):
    returncode, stderr = bad_flag_runs[tuple(args)]
    assert returncode == 2, stderr[-2000:]
    assert needle in stderr and "Traceback" not in stderr
    assert not os.path.exists("/nonexistent/never")


@pytest.mark.slow
def test_repeats_report_mean_std_and_ensembles(tmp_path, data_dir):
    from trainers.repeats import run_repeats

    exp = ExperimentConfig(dataset="mnist", model="mlp", train_examples=2048)
    summary = run_repeats(exp, _config(tmp_path, epochs=1), repeats=3)
    accs = summary["test_accuracies"]
    assert len(set(accs)) == 3  # three different fresh models, not one continued
    assert summary["test_accuracy_std"] > 0 and min(accs) > 0.5
    assert summary["ensemble_logits_accuracy"] >= min(accs) and summary[
        "ensemble_probs_accuracy"
    ] >= min(accs)
    assert json.loads((tmp_path / "repeats.json").read_text())["repeats"] == 3


@pytest.mark.cli
def test_sweep_writes_a_table(tmp_path, data_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.mnist",
            "--model=mlp",
            "--train_examples=1024",
            "--epochs=1",
            "--sweep=learning_rate=0.01,0.0001;widths=32,16",
            f"--model_dir={tmp_path}",
            "--export=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert len(rows) == 4 and {r["widths"] for r in rows} == {
        "32",
        "16",
    }  # each value as --widths takes it
    by_lr = {r["learning_rate"]: r["mean"] for r in rows if r["widths"] == "32"}
    assert by_lr["0.01"] > by_lr["0.0001"]  # the table's numbers mean something
    assert "| learning_rate | widths |" in (tmp_path / "sweep.md").read_text()


def _image_folder(root, corrupt=False):
    import numpy as np
    import tensorflow as tf

    from tests.engine_helpers import mnist_arrays

    x, y, _, _ = mnist_arrays()
    for digit in (0, 1):
        folder = root / f"digit{digit}"
        folder.mkdir(parents=True)
        for i in np.flatnonzero(y == digit)[:40]:
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(x[i]).numpy())
    if corrupt:
        (root / "digit0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


@pytest.mark.parametrize("on_corrupt", ["fail", "skip"])
@pytest.mark.cli
def test_image_folder_dataset_from_the_cli(tmp_path, on_corrupt):
    _image_folder(tmp_path / "images", corrupt=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.mnist",
            "--dataset=image_folder",
            f"--data_dir={tmp_path / 'images'}",
            f"--on_corrupt={on_corrupt}",
            "--model=mlp",
            "--global_batch_size=16",
            "--epochs=2",
            f"--model_dir={tmp_path / 'run'}",
            "--export=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    if on_corrupt == "fail":
        assert (
            proc.returncode == 2 and "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr
        )
        assert not (tmp_path / "run").exists()
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((tmp_path / "run" / "result.json").read_text())["test_accuracy"] > 0.8
