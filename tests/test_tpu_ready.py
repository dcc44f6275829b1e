"""The closest a CPU comes to a TPU: each trainer's whole per-replica step (augmentation, GELU
kernels, fused BN, lookahead) compiled as one XLA program (`jit_compile=True`: no host callbacks,
every op with an XLA kernel), and what a TPU cannot run refused before anything runs. Unverified on
a TPU itself."""

import json

import numpy as np
import pytest
import tensorflow as tf

from framework import ConfigError, TrainConfig
from trainers import recipes, tpu_guard
from trainers.experiment import ExperimentConfig, run_experiment

XLA = dict(jit_compile=True, strategy="default", train_steps=2, steps_per_loop=2)


def _compiled_step(controller):
    step = controller.trainer._replica_train_step
    assert getattr(step, "_jit_compile", False), "the step was not compiled with XLA"


@pytest.mark.slow
@pytest.mark.parametrize(
    "trainer,recipe",
    [("mnist", None), ("fashion_mnist", None), ("cifar", "fast"), ("cifar", "full")],
)
def test_each_trainers_step_compiles_as_one_xla_program(tmp_path, data_dir, trainer, recipe):
    # fashion_mnist's model and augmentation, on MNIST's files (the same shapes; the suite has no
    # Fashion-MNIST)
    data = {"dataset": "mnist"} if trainer == "fashion_mnist" else {}
    exp, config = recipes.configs(
        trainer, recipe, smoke=True, model_dir=str(tmp_path), **data, **XLA
    )
    if recipe == "full":
        assert config.lookahead_every and exp.activation == "gelu"  # the parts under test are there
    if trainer != "mnist":
        assert exp.augment != "none"
    result = run_experiment(exp, config, on_trained=_compiled_step)
    assert result["train_steps"] == 2 and np.isfinite(result["test_loss"])


@pytest.mark.slow
def test_triplet_step_compiles_as_one_xla_program(tmp_path, data_dir):
    from trainers import triplet

    config = TrainConfig(model_dir=str(tmp_path), global_batch_size=32, export=False, **XLA)
    triplet.run_triplet(
        config, dataset="mnist", data_dir=data_dir, num_train=256, num_test=64, eval_triplets=32
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step"][-1] == 2 and np.isfinite(history["loss"][-1])


def _host_flip(images, seed):
    """An op with a host callback: what a TPU (and jit_compile) cannot run."""
    del seed
    flipped = tf.py_function(lambda x: x[:, :, ::-1], [images], images.dtype)
    return tf.ensure_shape(flipped, images.shape)


@pytest.fixture
def host_op(monkeypatch):
    """`host_flip` registered as an augmentation op, as a user's own op would be."""
    from augment import OPS

    OPS.register("host_flip")(_host_flip)
    yield "host_flip"
    OPS.unregister("host_flip")


@pytest.mark.slow
def test_a_step_that_cannot_compile_fails_naming_the_op(tmp_path, data_dir, host_op):
    exp, config = recipes.configs(
        "mnist", None, smoke=True, model_dir=str(tmp_path), augment=host_op, **XLA
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="EagerPyFunc"):
        run_experiment(exp, config)


def test_tpu_refuses_host_augmentation_and_ops_without_xla_before_anything_runs(host_op):
    tpu = TrainConfig(strategy="tpu")
    with pytest.raises(ConfigError, match="--augment_on=host with --strategy=tpu"):
        tpu_guard.check(ExperimentConfig(augment="flip", augment_on="host"), tpu)
    with pytest.raises(ConfigError, match=r"--augment='flip,host_flip' .*host_flip cannot compile"):
        tpu_guard.check(ExperimentConfig(augment="flip,host_flip"), tpu)
    tpu_guard.check(ExperimentConfig(augment="flip,crop:padding=2"), tpu)  # augment.ops: compiles
    tpu_guard.check(ExperimentConfig(augment="flip,host_flip"), TrainConfig())  # not a TPU: runs


def test_plots_never_fail_a_finished_run(tmp_path, monkeypatch):
    from absl import logging

    from trainers import plots

    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *args: warnings.append(msg % args))
    monkeypatch.setattr(plots, "write_curves", lambda model_dir, **_: str(tmp_path / "curves.png"))

    def broken(*args, **kwargs):
        raise tf.errors.NotFoundError(None, None, "could not find registered transfer manager")

    monkeypatch.setattr(plots, "write_activations", broken)
    assert plots.write_plots(str(tmp_path), None, None) == [str(tmp_path / "curves.png")]
    assert warnings == [
        "plots: no activations.png: NotFoundError: could not find registered transfer manager"
    ]
    monkeypatch.setattr(plots, "_on_tpu", lambda: True)  # on a TPU the host probe is not even tried
    assert plots.write_plots(str(tmp_path), None, None) == [str(tmp_path / "curves.png")]
    assert "no activations.png on a TPU" in warnings[-1]
