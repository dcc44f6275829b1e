"""Adding an augmentation op is adding one file to augment/ops/: it registers itself, and --augment
finds it by name. The op here blanks the training images, so a run that applied it cannot learn the
digits; it notes, each time it is traced, whether inside an XLA compilation (a private TF helper:
the test's own probe, not the library's)."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import augment
from framework import ClassificationTask

ROOT = Path(__file__).resolve().parents[1]

# test_extending* write modules into the packages test_layers reads: one worker runs them in turn.
pytestmark = pytest.mark.xdist_group("package_files")

OP_FILE = '''
"""A test's op: every training image blank; records how it was traced in {marker!r}."""
import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from augment.ops.core import OPS, check_images


@OPS.register({name!r}, xla={xla})
def blank(images, seed, *, value: float = 0.0):
    graph = tf.compat.v1.get_default_graph()
    how = "eager" if tf.executing_eagerly() else "graph"
    if control_flow_util.GraphOrParentsInXlaContext(graph):
        how = "xla"
    with open({marker!r}, "a") as f:
        f.write(how + "\\n")
    images = check_images(images)
    return tf.zeros_like(images) + tf.cast(value, images.dtype)
'''


@pytest.fixture
def new_op(tmp_path):
    """new_op(xla) -> (op name, path of its trace log): one new file in augment/ops/, removed
    after."""
    made = []

    def make(xla: bool):
        name = f"blank_{os.getpid()}_{int(xla)}"  # unique: xdist workers load each other's files
        path = ROOT / "augment" / "ops" / f"_{name}.py"
        marker = tmp_path / f"{name}.log"
        path.write_text(textwrap.dedent(OP_FILE.format(name=name, xla=xla, marker=str(marker))))
        made.append((name, path))
        return name, marker

    yield make
    for name, path in made:
        path.unlink()
        for cached in (path.parent / "__pycache__").glob(f"_{name}.*.pyc"):
            cached.unlink()
        augment.OPS.unregister(name)
        sys.modules.pop(f"augment.ops._{name}", None)


@pytest.mark.cli
def test_a_new_op_file_trains_from_the_command_line_compiled_with_xla(tmp_path, data_dir, new_op):
    name, marker = new_op(xla=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.mnist",
            f"--augment={name}",
            "--model=mlp",
            "--train_examples=1024",
            "--test_examples=512",
            "--epochs=1",
            "--global_batch_size=64",
            f"--model_dir={tmp_path / 'run'}",
            "--export=false",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    # Trained on blank images only, the model cannot tell digits apart: chance, where the same run
    # on the digits themselves is far above it.
    assert result["test_accuracy"] < 0.3, result
    traced = set(marker.read_text().split())
    assert "xla" in traced, f"the op never ran inside the XLA-compiled policy: {traced}"
    assert "runs without XLA" not in proc.stdout + proc.stderr


def test_an_op_registered_without_xla_runs_uncompiled_and_the_policy_says_so(new_op, caplog):
    name, marker = new_op(xla=False)
    augment.OPS.reload()  # the file was added while this process runs
    policy = augment.get_policy(f"flip,{name}", num_classes=10, image_shape=(8, 8, 1))
    assert not policy.compiles
    assert augment.get_policy("flip", num_classes=10, image_shape=(8, 8, 1)).compiles
    task = ClassificationTask(10, augment=policy)
    x = tf.constant(np.random.default_rng(0).integers(1, 256, (4, 8, 8, 1)), tf.uint8)
    y = tf.zeros([4], tf.int32)
    with caplog.at_level(logging.INFO, logger="absl"):
        images, _ = tf.function(
            lambda: task.prepare((x, y), seed=tf.constant([1, 2]), training=True)
        )()
    np.testing.assert_array_equal(images, np.zeros((4, 8, 8, 1), np.float32))
    lines = [r.getMessage() for r in caplog.records if "runs without XLA" in r.getMessage()]
    assert len(lines) == 1 and name in lines[0], lines
    assert set(marker.read_text().split()) == {"graph"}
