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


@pytest.fixture
def held_tpu_lock(tmp_path, monkeypatch):
    """libtpu's lock file, held by another process (lockf, as libtpu takes it): a notebook kernel
    that imported TensorFlow with the TPU. Yields that process's pid."""
    lock = tmp_path / "libtpu_lockfile"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.setenv("TFLOOPS_TPU_LOCKFILE", str(lock))
    yield holder.pid
    holder.kill()
    holder.wait()


@pytest.mark.cli
def test_a_held_tpu_names_its_process_and_says_restart_the_runtime(held_tpu_lock, monkeypatch):
    from framework import tpu_env

    assert tpu_env.lock_holder() == held_tpu_lock
    # The check cell: a subprocess, which says so in one line before importing TensorFlow.
    out = subprocess.run(
        [sys.executable, "-m", "framework.tpu_env", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"another process holds the TPU (pid {held_tpu_lock}: " in out.stderr
    assert (
        "restart the runtime" in out.stderr and "python -m framework.tpu_env --check" in out.stderr
    )
    # The trainers: --strategy=tpu on a TPU VM whose TPU another process holds.
    monkeypatch.setattr(strategies, "on_tpu_vm", lambda: True)
    with pytest.raises(
        ConfigError, match=rf"--strategy=tpu: another process holds the TPU \(pid {held_tpu_lock}"
    ):
        strategies.make_strategy("tpu")


def test_a_lock_file_nobody_holds_is_no_obstacle(tmp_path, monkeypatch):
    from framework import tpu_env

    lock = tmp_path / "libtpu_lockfile"
    monkeypatch.setenv("TFLOOPS_TPU_LOCKFILE", str(lock))
    assert tpu_env.lock_holder() is None and tpu_env.busy_message() is None  # no file
    lock.write_text("")
    assert tpu_env.lock_holder() is None  # a file left behind, unlocked
    lock.write_text(str(os.getpid()))
    assert tpu_env.busy_message() is None  # this process itself


def test_tpu_runtime_switches(tmp_path, monkeypatch):
    from framework import tpu_env

    for name in ("PJRT_DEVICE", "TF_PLUGGABLE_DEVICE_LIBRARY_PATH", "TF_XLA_FLAGS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    (tmp_path / "libtpu").mkdir()
    (tmp_path / "libtpu" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TFLOOPS_TPU_RUNTIME", "stream_executor")  # TPU v2-v4: no PJRT variables
    assert tpu_env.configure_pjrt() is None and "PJRT_DEVICE" not in os.environ
    monkeypatch.setenv("TFLOOPS_TPU_RUNTIME", "pjrt_please")
    with pytest.raises(ConfigError, match="TFLOOPS_TPU_RUNTIME='pjrt_please': must be one of pjrt"):
        tpu_env.configure_pjrt()
    monkeypatch.delenv("TFLOOPS_TPU_RUNTIME")
    monkeypatch.setenv("TFLOOPS_TPU_MLIR_BRIDGE", "1")
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")  # the user's own flags are kept
    assert tpu_env.configure_pjrt() == str(tmp_path / "libtpu" / "libtpu.so")
    flags_set = os.environ["TF_XLA_FLAGS"].split()
    assert (
        flags_set[0] == "--tf_xla_auto_jit=0" and "--tf_mlir_enable_mlir_bridge=true" in flags_set
    )
    tpu_env.configure_pjrt()
    assert os.environ["TF_XLA_FLAGS"].split() == flags_set  # set once, not appended again


@pytest.fixture
def visible_gpu(monkeypatch):
    """A GPU that TensorFlow lists (faked: this machine has none), with memory growth recorded."""
    import tensorflow as tf

    fake = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    physical, logical = tf.config.list_physical_devices, tf.config.list_logical_devices
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda t=None: [fake] if t == "GPU" else physical(t)
    )
    monkeypatch.setattr(
        tf.config,
        "list_logical_devices",
        lambda t=None: (
            [tf.config.LogicalDevice("/device:GPU:0", "GPU")] if t == "GPU" else logical(t)
        ),
    )
    growth = []
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda d, on: growth.append((d.name, on))
    )
    return growth


def test_cpu_replicas_asked_for_are_cpu_replicas_even_with_a_gpu(visible_gpu, unseen_gpu):
    strategy = strategies.make_strategy("mirrored", num_cpu_devices=2)
    assert strategy.num_replicas_in_sync == 2
    assert all("CPU" in d for d in strategy.extended.worker_devices), (
        strategy.extended.worker_devices
    )


def test_cpu_replicas_on_a_gpu_box_whose_tensorflow_sees_no_gpu(unseen_gpu):
    assert strategies.make_strategy("mirrored", num_cpu_devices=2).num_replicas_in_sync == 2
    with pytest.raises(ConfigError, match="--strategy=mirrored: this machine has 1 NVIDIA GPU"):
        strategies.make_strategy("mirrored")  # no CPU replicas asked for: the GPU was meant


def test_gpu_memory_grows_by_default_and_a_flag_turns_it_off(visible_gpu):
    from framework import TrainConfig

    strategies.make_strategy("default")
    strategies.make_strategy("default", gpu_memory_growth=False)
    assert visible_gpu == [("/physical_device:GPU:0", True), ("/physical_device:GPU:0", False)]
    assert (
        TrainConfig().gpu_memory_growth
        and not TrainConfig(gpu_memory_growth=False).gpu_memory_growth
    )


def test_the_data_service_child_gets_no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    seen = {}

    def popen(command, **kwargs):
        seen.update(kwargs["env"])
        raise OSError("not started: the test only reads its environment")

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    with pytest.raises(OSError, match="not started"):
        launch.start_data_service(2, timeout=1)
    assert seen["CUDA_VISIBLE_DEVICES"] == "" and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


@pytest.mark.cli
def test_make_setup_reinstalls_when_the_cuda_extra_changes(tmp_path):
    """The venv stamp names the flavour: a venv made on a CPU node is out of date on a GPU node
    (nvidia-smi works there), so `make setup` reinstalls it with tensorflow[and-cuda]."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fake = {}
    for kind, status in (("gpu", 0), ("cpu", 1)):
        bin_dir = tmp_path / kind
        bin_dir.mkdir()
        (bin_dir / "nvidia-smi").write_text(
            f"#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-0)'\nexit {status}\n"
        )
        (bin_dir / "nvidia-smi").chmod(0o755)
        fake[kind] = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    venv = tmp_path / "venv"

    def make(kind, *args):
        return subprocess.run(
            ["make", "-C", root, *args, f"VENV={venv}", "TF=2.21"],
            env=fake[kind],
            capture_output=True,
            text=True,
            timeout=60,
        )

    planned = make("gpu", "-n", "setup")
    assert planned.returncode == 0, planned.stderr
    assert "tensorflow[and-cuda]==" in planned.stdout and ".installed-tf2.21-cuda" in planned.stdout
    assert "[and-cuda]" not in make("cpu", "-n", "setup").stdout
    venv.mkdir()
    (venv / ".installed-tf2.21-cpu").touch()  # made on a CPU node, newer than requirements.txt
    assert make("cpu", "-q", "setup").returncode == 0  # up to date there
    assert make("gpu", "-q", "setup").returncode == 1  # out of date on a GPU node
