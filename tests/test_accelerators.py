"""What a CPU can test of the GPU paths: a GPU that TensorFlow cannot see stops (or warns), and
framework.launch gives each worker its own GPUs."""

import os
import subprocess
import sys

import pytest
from absl import logging

from framework import ConfigError, launch, strategies


@pytest.fixture
def unseen_gpu(monkeypatch, tmp_path):
    """A machine whose driver lists an NVIDIA GPU that this (CPU-only) TensorFlow does not see."""
    (tmp_path / "0000:01:00.0").mkdir()
    monkeypatch.setattr(strategies, "NVIDIA_GPU_GLOB", str(tmp_path / "*"))
    monkeypatch.setattr(strategies, "NVIDIA_DEVICE_GLOB", str(tmp_path / "none"))
    monkeypatch.setattr(strategies, "_warned_unseen_gpus", False)


@pytest.mark.parametrize("name", ["mirrored", "one_device"])
def test_gpu_strategies_stop_when_tensorflow_sees_no_gpu(unseen_gpu, name):
    with pytest.raises(
        ConfigError,
        match=rf"--strategy={name}: this machine has 1 NVIDIA GPU\(s\) but "
        r"TensorFlow sees none .*tensorflow\[and-cuda\]",
    ):
        strategies.make_strategy(name)


def test_default_strategy_warns_once_about_an_unseen_gpu(unseen_gpu, monkeypatch):
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *args: warnings.append(msg % args))
    strategies.make_strategy("default")
    strategies.make_strategy("default")
    assert len(warnings) == 1 and "training on the CPU" in warnings[0]


def test_no_gpu_no_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(strategies, "NVIDIA_GPU_GLOB", str(tmp_path / "*"))
    monkeypatch.setattr(strategies, "NVIDIA_DEVICE_GLOB", str(tmp_path / "nvidia[0-9]*"))
    assert strategies.nvidia_gpus() == []
    strategies.check_gpus_seen("mirrored")  # nothing raised


def test_launch_splits_the_gpus_evenly_over_workers():
    assert launch.gpu_assignments(2, ["0", "1", "2", "3"]) == ["0,1", "2,3"]
    assert launch.gpu_assignments(3, ["0", "1", "2", "3"]) == [
        "0",
        "1",
        "2",
    ]  # one left over, unused
    assert launch.gpu_assignments(2, ["4", "6", "7"], per_worker=1) == ["4", "6"]
    assert launch.gpu_assignments(2, [], per_worker=0) == ["", ""]  # CPU workers
    assert launch.gpu_assignments(2, []) == [None, None]  # no GPUs: the environment is left alone
    with pytest.raises(ValueError, match="1 GPU.s. for 2 workers"):
        launch.gpu_assignments(2, ["0"])
    with pytest.raises(
        ValueError, match="--gpus_per_worker=2 x --workers=2 needs 4 GPUs; 3 visible"
    ):
        launch.gpu_assignments(2, ["0", "1", "2"], per_worker=2)


@pytest.mark.cli
def test_launch_hands_each_worker_its_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert launch.visible_gpus() == ["3", "5"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "framework.launch",
            "--workers=2",
            "--",
            sys.executable,
            "-c",
            "import os; print('sees', os.environ['CUDA_VISIBLE_DEVICES'])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(line for line in out.stdout.splitlines() if "sees" in line) == [
        "[worker 0] sees 3",
        "[worker 1] sees 5",
    ]
    assert "worker 0: GPUs 3; worker 1: GPUs 5" in out.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "framework.launch",
            "--workers=2",
            "--gpus_per_worker=2",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --gpus_per_worker=2 x --workers=2 needs 4 GPUs; 2 visible (3,5)"
    ]


def test_pjrt_variables_point_at_the_installed_libtpu(tmp_path, monkeypatch):
    from framework import tpu_env

    for name in (
        "PJRT_DEVICE",
        "NEXT_PLUGGABLE_DEVICE_USE_C_API",
        "TF_PLUGGABLE_DEVICE_LIBRARY_PATH",
    ):
        monkeypatch.setenv(name, "")  # so that the test's end restores (here: removes) what it sets
        monkeypatch.delenv(name)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert tpu_env.configure_pjrt() is None  # no libtpu: nothing set
    assert "PJRT_DEVICE" not in os.environ
    (tmp_path / "libtpu").mkdir()
    (tmp_path / "libtpu" / "__init__.py").write_text("")
    monkeypatch.setenv("PJRT_DEVICE", "TPU")  # a value the user set is kept
    assert tpu_env.configure_pjrt() == str(tmp_path / "libtpu" / "libtpu.so")
    assert os.environ["NEXT_PLUGGABLE_DEVICE_USE_C_API"] == "true"
    assert os.environ["TF_PLUGGABLE_DEVICE_LIBRARY_PATH"] == str(tmp_path / "libtpu" / "libtpu.so")


@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker"])
def test_jit_compile_under_a_replicating_strategy_is_refused_before_anything_is_built(strategy):
    from framework import TrainConfig

    with pytest.raises(
        ConfigError,
        match=rf"--jit_compile with --strategy={strategy}: XLA-compiling the "
        "replicated step fails",
    ):
        TrainConfig(jit_compile=True, strategy=strategy)
    TrainConfig(
        jit_compile=True, strategy="one_device"
    )  # one replica: allowed (tests/test_engine.py trains it)


def test_tpu_strategy_gets_the_full_recipe_in_bf16_before_tensorflow_lists_a_tpu(monkeypatch):
    from framework import precision
    from trainers import recipes

    monkeypatch.setattr(precision, "bf16_is_fast", lambda: False)  # as a CPU without bf16 would say
    assert recipes.pick("cifar", "auto") == "fast"  # this machine has no GPU or TPU
    exp, config = recipes.configs("cifar", "auto", strategy="tpu")
    assert config.mixed_precision == "bf16" and exp.widths == (64, 256, 256)  # the full recipe
    assert recipes.configs("cifar", "auto")[1].mixed_precision == "none"
    assert (
        recipes.configs("cifar", "auto", strategy="tpu", mixed_precision="none")[1].mixed_precision
        == "none"
    )
