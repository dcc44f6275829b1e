"""Test setup: two logical CPU devices (for 2-vs-1 replica tests, GPUs or not), GPU memory growth,
and the shared datasets."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "datasets"
os.environ.setdefault("DATA_DIR", str(SHARED_DATA))

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Logical devices must be set before TensorFlow initialises its runtime, so once per test process.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
# On a GPU box the test processes (xdist workers, and the CLI runs they start) share each GPU:
# memory grows as needed instead of the first process mapping nearly all of it.
for _gpu in tf.config.list_physical_devices("GPU"):
    tf.config.experimental.set_memory_growth(_gpu, True)


@pytest.fixture(scope="session")
def data_dir():
    if not (SHARED_DATA / "mnist.npz").exists():
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return os.path.normpath(SHARED_DATA)


@pytest.fixture(scope="session")
def mnist(data_dir):
    from framework.data import datasets

    return datasets.load("mnist", data_dir)


@pytest.fixture(scope="session")
def cifar(data_dir):
    from framework.data import datasets

    return datasets.load(
        "cifar10", data_dir
    )  # the first run decodes (~2 s); later runs read the disk cache


@pytest.fixture(autouse=True)
def _op_determinism_off_after_test():
    """`--deterministic` is process-wide once enabled; later tests must not inherit it."""
    yield
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()
