"""tf.data service (framework/data_service.py): every example once per epoch through 2 data workers,
a resume restarts the right epoch, and a run launched with 2 local data workers trains."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from framework import ConfigError, TrainConfig, data_service

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, BATCH, FETCH = 96, 16, 2  # 6 steps per epoch, 2 steps per element


@pytest.fixture(scope="module")
def service():
    address, servers = data_service.start_servers(2)
    yield address
    for server in reversed(
        servers
    ):  # workers first: collected later, they wait for their dispatcher
        server._stop()


def _seen(address, start_step, stop_step):
    """{(epoch, id): times seen} over both input pipelines (2 replicas each) of a 4-replica run."""
    ids = np.arange(N, dtype=np.int32)
    tag = lambda rows, index, epoch: (rows[0] + tf.cast(epoch, tf.int32) * N,)  # noqa: E731  id + epoch * N
    fn = data_service.train_dataset_fn(
        (ids,),
        address,
        global_batch_size=BATCH,
        seed=7,
        start_step=start_step,
        stop_step=stop_step,
        steps_per_fetch=FETCH,
        example_fn=tag,
    )
    counts = collections.Counter()
    for pipeline in range(2):
        for (rows,) in fn(tf.distribute.InputContext(2, pipeline, 4)):
            assert rows.shape == (FETCH, BATCH // 4)
            counts.update(divmod(int(v), N) for v in rows.numpy().ravel())
    return counts


@pytest.mark.slow
def test_every_example_once_per_epoch_through_two_data_workers(service):
    counts = _seen(service, 0, 12)  # two epochs
    assert counts == collections.Counter((e, i) for e in range(2) for i in range(N)), counts
    # A resume at step 6 (epoch 1) makes exactly epoch 1, each example once.
    assert _seen(service, 6, 12) == collections.Counter((1, i) for i in range(N))


def test_bad_address_is_a_config_error():
    for bad in ("localhost:5050", "grpc://localhost", "http://a:1", "grpc://a:99999"):
        with pytest.raises(ConfigError, match="expected grpc://HOST:PORT"):
            TrainConfig(data_service=bad)
    assert data_service.parse_address("grpc://10.0.0.2:5050") == ("10.0.0.2", 5050)


@pytest.mark.cli
def test_launch_with_two_data_workers_trains(tmp_path, data_dir):
    args = [
        sys.executable,
        "-m",
        "framework.launch",
        "--workers=1",
        "--data_workers=2",
        "--",
        sys.executable,
        "-m",
        "trainers.mnist",
        "--model=mlp",
        "--train_examples=2048",
        "--test_examples=512",
        "--epochs=2",
        "--global_batch_size=64",
        f"--model_dir={tmp_path}",
        "--export=false",
    ]
    proc = subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "training input: tf.data service at grpc://localhost:" in proc.stdout + proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    history = json.loads((tmp_path / "history.json").read_text())
    assert result["config"]["data_service"].startswith("grpc://localhost:")
    assert history["loss"][-1] < history["loss"][0] and result["test_accuracy"] > 0.6, (
        history,
        result,
    )


@pytest.mark.slow
def test_a_corrupt_jpeg_met_by_a_data_worker_is_named_by_the_trainer(service, tmp_path):
    """Decoded unchecked in a data worker (JPEGs, --on_corrupt=fail), a garbled file fails the
    consumer with TensorFlow's InvalidArgumentError (what the trainers catch), which is traced to
    the file."""
    from test_streaming import _garble, make_folder

    from framework.data.image_folder import list_image_folder, unreadable_file_message

    root = make_folder(str(tmp_path), range(N), jpeg=True)
    make_folder(root, range(N, N + 6), "test", jpeg=True)
    garbled = os.path.join(root, "train", "c0", "0021.jpg")
    _garble(garbled)
    listed = list_image_folder(root)
    fn = data_service.train_dataset_fn(
        listed.splits["train"], service, global_batch_size=BATCH, seed=0, stop_step=12
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        for _ in fn(tf.distribute.InputContext()):
            pass
    assert unreadable_file_message(err.value, listed.splits.values()).startswith(
        f"{garbled}: unreadable image file: truncated or corrupt image data"
    )
