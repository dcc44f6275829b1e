"""Streamed image folders: the same batches as in memory, exact resume after kill -9, each worker
its own share, corrupt files skipped (counted) or failing by name, and the in-memory/streaming
choice line.

The fixture's images are 16x16 grey PNGs whose pixels all hold the example's id (< 256), so a batch
says which examples it holds; labels are id % 3 (class folders c0, c1, c2). `jpeg_folder` holds
random 32x32 RGB JPEGs: with --on_corrupt=fail they take the unchecked path
(streaming.checks_each_file).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from test_processes import ROOT, _env, _final_variables, _latest_step

from framework import input_pipeline
from framework.data import streaming
from framework.data.image_folder import (
    find_unreadable,
    list_image_folder,
    load_image_folder,
    unreadable_file_message,
)


def make_folder(root, ids, split="train", jpeg=False):
    """root/split/c{id % 3}/{id:04d}.png, each image filled with its id; jpeg: {id:04d}.jpg, random
    32x32 RGB seeded by the id."""
    for i in ids:
        folder = os.path.join(root, split, f"c{i % 3}")
        os.makedirs(folder, exist_ok=True)
        if jpeg:
            image = np.random.default_rng(i).integers(0, 256, (32, 32, 3), np.uint8)
            tf.io.write_file(os.path.join(folder, f"{i:04d}.jpg"), tf.io.encode_jpeg(image))
            continue
        image = np.full((16, 16, 1), i, np.uint8)
        image[0, 0] = (i * 7) % 256  # not every pixel equal: a resize would show
        tf.io.write_file(os.path.join(folder, f"{i:04d}.png"), tf.io.encode_png(image))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("streamed"))
    make_folder(root, range(192))
    make_folder(root, range(192, 240), "validation")
    return make_folder(root, range(240, 250), "test")


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("jpegs"))
    make_folder(root, range(96), jpeg=True)
    return make_folder(root, range(96, 106), "test", jpeg=True)


def _garble(path):
    """0xFF bytes over the middle of a JPEG: its start and end markers stay, its decoder fails."""
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] + b"\xff" * 64 + data[len(data) // 2 + 64 :])


def _ids(images):
    return images[..., 1, 1, 0].numpy().reshape(-1)


@pytest.mark.slow
def test_streamed_folder_gives_the_in_memory_batches(folder):
    memory, streamed = load_image_folder(folder), list_image_folder(folder)
    assert streamed.image_shape == (16, 16, 1) and set(streamed.splits) == {"train", "val", "test"}
    assert (
        memory.x_val is not None and len(memory.x_val) == streamed.splits["val"].num_examples == 48
    )
    ctx = tf.distribute.InputContext()
    kwargs = dict(global_batch_size=32, seed=5, steps_per_fetch=2, start_step=2)
    a = input_pipeline.train_dataset_fn((memory.x_train, memory.y_train), **kwargs)(ctx)
    b = input_pipeline.train_dataset_fn(streamed.splits["train"], **kwargs)(ctx)
    for (xa, ya), (xb, yb) in zip(
        a.take(5), b.take(5)
    ):  # across an epoch's end (6 steps per epoch)
        assert xb.dtype == tf.uint8 and xb.shape == (2, 32, 16, 16, 1)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # An evaluation streams every example once, in order, with weight 0 on the padding.
    fn, batches = input_pipeline.eval_dataset_fn(streamed.splits["val"], global_batch_size=20)
    rows = list(fn(ctx).take(batches))
    weights = np.concatenate([w for _, _, w in rows])
    assert batches == 3 and weights.sum() == 48
    np.testing.assert_array_equal(
        np.concatenate([_ids(x) for x, _, _ in rows])[weights > 0],
        sorted(range(192, 240), key=lambda i: (i % 3, i)),
    )  # by class folder


@pytest.mark.slow
def test_corrupt_files_while_streaming_are_skipped_and_counted_or_fail_by_name(tmp_path):
    root = make_folder(str(tmp_path), range(60))
    make_folder(root, range(60, 70), "test")
    cut = os.path.join(root, "train", "c1", "0004.png")
    with open(cut, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:40])  # a truncated file: its header reads, its end marker is missing
    with open(os.path.join(root, "train", "c2", "0999.png"), "w") as f:
        f.write("not an image")
    ctx = tf.distribute.InputContext()
    skipping = list_image_folder(root, on_corrupt="skip")
    train = skipping.splits["train"]
    seen = np.concatenate(
        [
            _ids(x)
            for x, _ in input_pipeline.train_dataset_fn(train, global_batch_size=20, seed=0)(
                ctx
            ).take(6)
        ]
    )  # two epochs of 3 steps (61 files)
    assert skipping.skipped.count == 2 and 4 not in seen and len(seen) == 120
    # Skipped rows take a copy of another row of their batch: the shapes and the order stay.
    files = np.array(train.files)
    order = input_pipeline.epoch_permutation(train.num_examples, 0, 0).numpy()[:60]
    unreadable = np.isin(files[order], [cut, os.path.join(root, "train", "c2", "0999.png")])
    readable_ids = np.array([int(os.path.basename(f)[:4]) for f in files[order]])
    np.testing.assert_array_equal(seen[:60][~unreadable], readable_ids[~unreadable])
    failing = list_image_folder(root).splits["train"]
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        for _ in input_pipeline.train_dataset_fn(failing, global_batch_size=20, seed=0)(ctx).take(
            6
        ):
            pass
    message = streaming.corrupt_file_message(err.value)
    assert message.startswith(f"{root}/train/c") and "--on_corrupt=skip" in message
    assert "not a JPEG or PNG file" in message or "truncated" in message


def test_train_indices_are_the_examples_the_stream_reads(folder):
    source = list_image_folder(folder).splits["train"]
    stream = input_pipeline.train_dataset_fn(source, global_batch_size=32, seed=5, start_step=4)
    seen = np.concatenate(
        [_ids(x) for x, _ in stream(tf.distribute.InputContext()).take(4)]
    )  # across epochs
    indices = input_pipeline.train_indices(
        source.num_examples, global_batch_size=32, seed=5, start_step=4, steps=4
    )
    names = [source.example_files(int(i))[0] for i in indices]
    np.testing.assert_array_equal(seen, [int(os.path.basename(f)[:4]) for f in names])
    assert (
        len(input_pipeline.train_indices(10, global_batch_size=32, seed=5, start_step=0, steps=4))
        == 0
    )


def test_a_jpeg_folder_failing_on_corrupt_files_streams_unchecked_the_same_batches(
    jpeg_folder, folder
):
    memory = load_image_folder(jpeg_folder)
    unchecked, checked = (
        list_image_folder(jpeg_folder, on_corrupt=m).splits["train"] for m in ("fail", "skip")
    )
    assert (
        not unchecked.checked
        and checked.checked
        and list_image_folder(folder).splits["train"].checked
    )  # PNGs
    ctx = tf.distribute.InputContext()
    kwargs = dict(global_batch_size=16, seed=1, steps_per_fetch=2)
    streams = [
        input_pipeline.train_dataset_fn(source, **kwargs)(ctx).take(6)  # two epochs
        for source in ((memory.x_train, memory.y_train), unchecked, checked)
    ]
    for (xa, ya), (xb, yb), (xc, yc) in zip(*streams):
        assert xb.shape == (2, 16, 32, 32, 3) and xa.numpy().std() > 50
        for x, y in ((xb, yb), (xc, yc)):
            np.testing.assert_array_equal(xa, x)
            np.testing.assert_array_equal(ya, y)


def test_a_decode_error_of_an_unchecked_jpeg_is_traced_to_its_file(tmp_path):
    root = make_folder(str(tmp_path), range(40), jpeg=True)
    make_folder(root, range(40, 46), "test", jpeg=True)
    garbled = os.path.join(root, "train", "c1", "0013.jpg")
    _garble(garbled)
    listed = list_image_folder(root)
    source = listed.splits["train"]
    assert not source.checked  # the checks would pass it too: its markers are right
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        for _ in input_pipeline.train_dataset_fn(source, global_batch_size=8, seed=0)(
            tf.distribute.InputContext()
        ).take(10):
            pass
    assert streaming.corrupt_file_message(err.value) is None  # TensorFlow's error names no file ...
    message = unreadable_file_message(err.value, listed.splits.values())  # ... this one does
    assert message.startswith(f"{garbled}: unreadable image file: truncated or corrupt image data")
    assert message.endswith(
        "crop window. Fix or remove it, or pass --on_corrupt=skip to skip such files"
    )
    assert (
        unreadable_file_message(
            tf.errors.InvalidArgumentError(None, None, "shapes differ"), [source]
        )
        is None
    )
    cut = os.path.join(root, "test", "c0", "0042.jpg")
    with open(cut, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[:100])
    assert find_unreadable(listed.splits["test"].files).startswith(
        f"{cut}: unreadable image file: JPEG header truncated"
    )
    assert find_unreadable([f for f in listed.splits["test"].files if f != cut]) is None


@pytest.mark.cli
def test_a_corrupt_jpeg_met_while_streaming_fails_the_command_in_one_line(tmp_path):
    root = make_folder(str(tmp_path), range(48), jpeg=True)
    make_folder(root, range(48, 54), "test", jpeg=True)
    garbled = os.path.join(root, "train", "c2", "0029.jpg")
    _garble(garbled)
    run = subprocess.run(
        STREAMED + ["--epochs=1", f"--data_dir={root}", f"--model_dir={tmp_path / 'run'}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert (
        run.stderr.strip().splitlines()[-1].startswith(f"error: {garbled}: unreadable image file: ")
    ), run.stderr[-1500:]


def test_decode_image_file_reads_resizes_and_names_each_kind_of_bad_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (24, 20, 3), np.uint8)
    files = {
        "right.jpg": tf.io.encode_jpeg(image).numpy(),
        "other_size.jpg": tf.io.encode_jpeg(image[:12]).numpy(),
        "right.png": tf.io.encode_png(image).numpy(),
    }
    files["cut.jpg"] = files["right.jpg"][:300]
    files["text.jpg"] = b"no image here, only words"
    files["bomb.png"] = (
        files["right.png"][:16] + (50000).to_bytes(4, "big") * 2 + files["right.png"][24:]
    )
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    def decode(name, on_corrupt="skip", limit=10**6):
        found, readable = streaming.decode_image_file(
            tf.constant(str(tmp_path / name)),
            (24, 20, 3),
            on_corrupt=on_corrupt,
            max_image_pixels=limit,
        )
        return found.numpy(), bool(readable)

    right, ok = decode("right.jpg")
    assert ok and np.array_equal(right, tf.io.decode_jpeg(files["right.jpg"]).numpy())
    assert decode("right.png")[1] and np.array_equal(decode("right.png")[0], image)
    resized, ok = decode("other_size.jpg")  # 12x20 -> 24x20, as the in-memory path resizes
    expected = streaming._resize(tf.io.decode_jpeg(files["other_size.jpg"]), 24, 20).numpy()
    assert (
        ok
        and resized.shape == (24, 20, 3)
        and np.array_equal(resized, expected)
        and resized[12:].any()
    )
    for name, why in (
        ("cut.jpg", "truncated"),
        ("text.jpg", "not a JPEG or PNG file"),
        ("bomb.png", "over max_image_pixels=1000000 pixels"),
    ):
        zeros, ok = decode(name)
        assert not ok and not zeros.any()
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            decode(name, "fail")
        assert streaming.corrupt_file_message(err.value).startswith(
            f"{tmp_path / name}: unreadable image file: {why}"
        )
    # No pixel limit (no header parse): the same images, and the same names for files that are no
    # image.
    for name in ("right.jpg", "other_size.jpg", "right.png"):
        assert (
            np.array_equal(decode(name, limit=0)[0], decode(name)[0]) and decode(name, limit=0)[1]
        )
    for name, why in (("cut.jpg", "truncated"), ("text.jpg", "not a JPEG or PNG file")):
        assert not decode(name, limit=0)[1]
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            decode(name, "fail", limit=0)
        assert streaming.corrupt_file_message(err.value).startswith(
            f"{tmp_path / name}: unreadable image file: {why}"
        )

    # Unchecked (JPEGs, --on_corrupt=fail): the same images; a resized file over the limit fails by
    # name; the decoder's own errors name no file (find_unreadable does: the test above).
    def unchecked(name, limit=10**6):
        image, readable = streaming.decode_image_file(
            tf.constant(str(tmp_path / name)),
            (24, 20, 3),
            on_corrupt="fail",
            max_image_pixels=limit,
            checked=False,
        )
        assert bool(readable)
        return image.numpy()

    for name in ("right.jpg", "other_size.jpg"):
        assert np.array_equal(unchecked(name), decode(name)[0]) and np.array_equal(
            unchecked(name, 0), decode(name)[0]
        )
    assert np.array_equal(
        unchecked("right.jpg", limit=480), right
    )  # 24x20: the target size is not checked
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        unchecked("other_size.jpg", limit=200)  # 12x20 = 240 pixels, resized
    assert streaming.corrupt_file_message(err.value).startswith(
        f"{tmp_path / 'other_size.jpg'}: unreadable image file: over max_image_pixels=200 pixels"
    )
    for name in ("cut.jpg", "text.jpg"):
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            unchecked(name)
        assert streaming.corrupt_file_message(err.value) is None
    with pytest.raises(ValueError, match="on_corrupt must be 'fail'"):
        streaming.decode_image_file(
            tf.constant("x.jpg"), (24, 20, 3), on_corrupt="skip", max_image_pixels=0, checked=False
        )
    jpegs = ["a.jpg", "b.JPEG"]
    assert not streaming.checks_each_file(jpegs, "fail", (24, 20, 3), 10**6)
    assert not streaming.checks_each_file(jpegs, "fail", (24, 20, 3), 0)
    assert streaming.checks_each_file(
        jpegs, "skip", (24, 20, 3), 10**6
    )  # skipping needs the checks
    assert streaming.checks_each_file(
        jpegs + ["c.png"], "fail", (24, 20, 3), 10**6
    )  # PNG: no limit of its own
    assert streaming.checks_each_file(
        jpegs, "fail", (24, 20, 3), 400
    )  # the target itself over the limit


def test_the_in_memory_or_streaming_choice_is_one_line(folder, caplog):
    from trainers.experiment import ExperimentConfig, load_data

    caplog.set_level("INFO")
    data, _ = load_data(ExperimentConfig(dataset="image_folder", data_dir=folder), seed=0)
    assert isinstance(data.train, tuple)  # 250 images of 256 bytes: in memory
    data, _ = load_data(
        ExperimentConfig(dataset="image_folder", data_dir=folder, data_in_memory="no"), seed=0
    )
    assert isinstance(data.train, input_pipeline.StreamedSource) and set(data.evals) == {
        "val",
        "test",
    }
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data: ")]
    assert lines == [
        f"data: in memory: image_folder {folder} (--data_in_memory=auto: about 0.064 MB decoded, "
        "under the 2.15 GB limit)",
        f"data: streaming from disk: image_folder {folder} (--data_in_memory=no: about 0.064 MB "
        "decoded)",
    ]
    assert not streaming.choose_in_memory("auto", 3 << 30, "x")


STREAMED = [
    sys.executable,
    "-m",
    "trainers.mnist",
    "--dataset=image_folder",
    "--data_in_memory=no",
    "--model=mlp",
    "--epochs=8",
    "--global_batch_size=16",
    "--steps_per_loop=4",
    "--checkpoint_every=4",
    "--deterministic",
    "--export=false",
    "--lr_schedule=cosine",
]  # 96 steps


@pytest.mark.cli
def test_kill_9_then_resume_equals_uninterrupted_on_a_streamed_folder(jpeg_folder, tmp_path):
    args = STREAMED + [
        f"--data_dir={jpeg_folder}",
        "--epochs=16",
    ]  # JPEGs: the unchecked path; 96 steps
    full = subprocess.Popen(
        args + [f"--model_dir={tmp_path / 'full'}"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run_dir = tmp_path / "killed"
    killed = subprocess.Popen(
        args + [f"--model_dir={run_dir}"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while _latest_step(run_dir) < 16 and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL and 0 < _latest_step(run_dir) < 96
    resumed = subprocess.run(
        args + [f"--model_dir={run_dir}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr and "data: streaming from disk" in resumed.stderr
    _, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err[-2000:]
    a, b = _final_variables(tmp_path / "full"), _final_variables(run_dir)
    assert a.keys() == b.keys() and int(b["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 96
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert json.loads((run_dir / "result.json").read_text())["skipped_files"] == 0


_RECORD_IDS = """
import json, sys
import numpy as np, tensorflow as tf
from framework.data.image_folder import list_image_folder
strategy = tf.distribute.MultiWorkerMirroredStrategy()
source = list_image_folder(sys.argv[1]).splits["train"]
fn = source.train_dataset_fn(global_batch_size=32, seed=3, steps_per_fetch=2)
iterator = iter(strategy.distribute_datasets_from_function(fn))
seen = []
for _ in range(3):  # one epoch: 6 steps of 32, in fetches of 2
    images, _ = next(iterator)
    for local in strategy.experimental_local_results(images):
        seen += local[..., 1, 1, 0].numpy().reshape(-1).tolist()
print("IDS", json.dumps(seen))
"""


@pytest.mark.cli
def test_two_workers_each_read_their_own_share(folder):
    from framework.launch import tf_configs

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _RECORD_IDS, folder],
            cwd=ROOT,
            text=True,
            env={**_env(), "TF_CONFIG": json.dumps(c)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for c in tf_configs(2)
    ]
    outs = [w.communicate(timeout=180) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][1][-1500:] + outs[1][1][-1500:]
    seen = [json.loads(out.split("IDS ", 1)[1]) for out, _ in outs]
    assert len(seen[0]) == len(seen[1]) == 96 and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(192))  # the whole epoch, each example once


def test_bad_streamed_input_fails_before_training(tmp_path, folder):
    from framework import ConfigError
    from framework.data import DataError
    from trainers.experiment import ExperimentConfig, load_data

    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "cat").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"empty/train: no .jpg/.jpeg/.png files in the class folders \['cat'\]"
    ):
        load_data(
            ExperimentConfig(
                dataset="image_folder", data_dir=str(tmp_path / "empty"), data_in_memory="no"
            ),
            0,
        )
    with pytest.raises(
        ConfigError, match=r"--train_examples needs the data in memory, .* --data_in_memory=yes"
    ):
        load_data(
            ExperimentConfig(
                dataset="image_folder", data_dir=folder, data_in_memory="no", train_examples=9
            ),
            0,
        )
    with pytest.raises(
        ConfigError, match=r"--data_in_memory=no streams files: it needs --dataset=image_folder"
    ):
        ExperimentConfig(dataset="mnist", data_in_memory="no")
