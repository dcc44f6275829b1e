"""TFRecord shards: exact round trips, malformed files named, and the converter command."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from framework import input_pipeline
from framework.data import datasets, tfrecords
from framework.data.datasets import DataError
from framework.data.image_folder import load_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_round_trip_is_exact(tmp_path, cifar):
    x, y = cifar.x_train[:500], cifar.y_train[:500]
    paths = tfrecords.write_tfrecords(
        x, y, str(tmp_path), "train", 3, class_names=cifar.class_names
    )
    assert [os.path.basename(p) for p in paths] == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    x2, y2 = tfrecords.load_tfrecords(str(tmp_path / "train-*"))
    assert x2.dtype == np.uint8 and y2.dtype == np.int32
    np.testing.assert_array_equal(x2, x)  # same images, same order
    np.testing.assert_array_equal(y2, y)

    ds = tfrecords.read_tfrecords(str(tmp_path / "train-*"), image_shape=(32, 32, 3))
    assert ds.element_spec[0].shape == (32, 32, 3) and ds.element_spec[0].dtype == tf.uint8
    assert ds.element_spec[1].dtype == tf.int32
    images, labels = next(iter(ds.batch(500)))
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    # Interleaved reading gives the same examples in another order.
    interleaved = tfrecords.read_tfrecords(str(tmp_path / "*.tfrecord"), num_parallel_reads=3)
    labels = np.concatenate([b for _, b in interleaved.batch(128).as_numpy_iterator()])
    np.testing.assert_array_equal(np.sort(labels), np.sort(y))


def test_rewrite_replaces_old_shards(tmp_path, mnist):
    x, y = mnist.x_test[:40], mnist.y_test[:40]
    tfrecords.write_tfrecords(x, y, str(tmp_path), "test", 4)
    tfrecords.write_tfrecords(x[:10], y[:10], str(tmp_path), "test", 2)
    assert sorted(os.listdir(tmp_path)) == [
        "test-00000-of-00002.tfrecord",
        "test-00001-of-00002.tfrecord",
        "test.json",
    ]
    np.testing.assert_array_equal(tfrecords.load_tfrecords(str(tmp_path / "test-*"))[0], x[:10])


def test_whole_dataset_with_validation_split(tmp_path, mnist):
    ds = datasets.make_subsets(
        mnist, classes=[7, 2], train_examples=300, image_size=10, validation_split=0.1
    )
    written = tfrecords.convert(ds, str(tmp_path), num_shards=3)
    assert [len(written[s]) for s in ("train", "test", "val")] == [
        3,
        3,
        1,
    ]  # never more than num_shards
    back = tfrecords.load_tfrecord_dataset(str(tmp_path), name="mnist72")
    assert back.class_names == ("7", "2") and back.name == "mnist72"
    for split in ("train", "test", "val"):
        np.testing.assert_array_equal(getattr(back, f"x_{split}"), getattr(ds, f"x_{split}"))
        np.testing.assert_array_equal(getattr(back, f"y_{split}"), getattr(ds, f"y_{split}"))


@pytest.mark.slow
def test_malformed_files_are_named(tmp_path, mnist):
    x, y = mnist.x_train[:600], mnist.y_train[:600]
    paths = tfrecords.write_tfrecords(x, y, str(tmp_path), "train", 2)
    good = open(paths[1], "rb").read()

    # Cut in the middle of a record: TF's reader would stop silently; the record count catches it.
    with open(paths[1], "wb") as f:
        f.write(good[: len(good) // 2])
    with pytest.raises(DataError, match=f"{paths[1]}: .*truncated or corrupt"):
        tfrecords.load_tfrecords(str(tmp_path / "train-*"))

    # Flipped bits fail the record checksum.
    damaged = bytearray(good)
    damaged[5000] ^= 0xFF
    with open(paths[1], "wb") as f:
        f.write(bytes(damaged))
    with pytest.raises(
        DataError, match=f"{paths[1]}: malformed, truncated or corrupt TFRecord file"
    ):
        tfrecords.load_tfrecords(str(tmp_path / "train-*"))

    # Records that are not our examples (written by some other tool) are named even when streaming.
    other = str(tmp_path / "other.tfrecord")
    with tf.io.TFRecordWriter(other) as w:
        w.write(
            tf.train.Example(
                features=tf.train.Features(
                    feature={"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))}
                )
            ).SerializeToString()
        )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=f"Malformed TFRecord example in.*{other}"
    ):
        list(tfrecords.read_tfrecords(other))
    with pytest.raises(DataError, match=f"{other}: malformed"):
        tfrecords.load_tfrecords(other)

    with pytest.raises(DataError, match="no TFRecord files match"):
        tfrecords.load_tfrecords(str(tmp_path / "nothing-*"))


def test_write_checks_its_arguments(tmp_path):
    x = np.zeros((3, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match=r"`num_shards` \(4\) must be an integer in \[1, 3\]"):
        tfrecords.write_tfrecords(x, np.zeros(3, np.int32), str(tmp_path), "train", 4)
    with pytest.raises(ValueError, match="`x` must be uint8"):
        tfrecords.write_tfrecords(
            x.astype(np.float32), np.zeros(3, np.int32), str(tmp_path), "train"
        )


def test_converter_on_a_dataset_subset(tmp_path, data_dir, capsys):
    out = str(tmp_path / "out")
    status = tfrecords.main(
        [
            "prog",
            "--dataset=mnist",
            f"--data_dir={data_dir}",
            f"--out_dir={out}",
            "--num_shards=2",
            "--train_examples=200",
            "--image_size=14",
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert "train: 200 examples (14, 14, 1) in 2 shard(s)" in capsys.readouterr().out
    back = tfrecords.load_tfrecord_dataset(out)
    assert back.x_train.shape == (200, 14, 14, 1) and back.x_test.shape == (10000, 14, 14, 1)
    assert back.class_names == tuple("0123456789")

    assert tfrecords.main(["prog", f"--out_dir={out}"]) == 2
    assert "pass exactly one of --dataset=NAME or --image_folder=PATH" in capsys.readouterr().err
    assert (
        tfrecords.main(
            [
                "prog",
                "--dataset=cifar100",
                f"--data_dir={tmp_path}",
                "--nodownload",
                f"--out_dir={out}",
            ]
        )
        == 1
    )
    assert "cifar100 not found" in capsys.readouterr().err


@pytest.mark.cli
def test_converter_command_on_an_image_folder(tmp_path, cifar):
    for i in range(12):
        folder = tmp_path / "photos" / cifar.class_names[cifar.y_train[i]]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(cifar.x_train[i]).numpy())
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "framework.data.tfrecords",
            f"--image_folder={tmp_path / 'photos'}",
            f"--out_dir={out}",
            "--test_split=0.25",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "train: 9 examples (32, 32, 3) in 1 shard(s)" in result.stdout
    expected = load_image_folder(str(tmp_path / "photos"), test_split=0.25)
    back = tfrecords.load_tfrecord_dataset(str(out))
    assert back.class_names == expected.class_names
    np.testing.assert_array_equal(back.x_train, expected.x_train)
    np.testing.assert_array_equal(back.y_test, expected.y_test)


def test_missing_shard_is_named(tmp_path, mnist):
    ds = datasets.make_subsets(mnist, train_examples=30)
    tfrecords.convert(ds, str(tmp_path), num_shards=3)
    os.remove(tmp_path / "train-00001-of-00003.tfrecord")
    with pytest.raises(
        DataError,
        match=r"shards \['train-00001-of-00003.tfrecord'\] listed in train.json are missing",
    ):
        tfrecords.load_tfrecord_dataset(str(tmp_path))


# --------------------------------------------------------------------------------------------------
# Streaming (the guarantees in framework/data/tfrecords.py's docstring).


def _numbered_shards(out, n=400, shards=4):
    """n 4x4 images whose pixels hold their id (in 2 bytes), in `shards` shards; and a test
    split."""
    ids = np.arange(n)
    x = np.zeros((n, 4, 4, 1), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = ids // 256, ids % 256
    tfrecords.write_tfrecords(x, (ids % 3).astype(np.int32), out, "train", shards)
    tfrecords.write_tfrecords(x[:50], np.zeros(50, np.int32), out, "test", 1)
    return tfrecords.list_tfrecords(out, shuffle_buffer=64)


def _record_ids(images):
    images = images.numpy().astype(np.int64)
    return (images[..., 0, 0, 0] * 256 + images[..., 0, 1, 0]).reshape(-1)


@pytest.mark.slow
def test_streamed_shards_resume_exactly_and_split_over_pipelines(tmp_path):
    listed = _numbered_shards(str(tmp_path))
    train, ctx = listed.splits["train"], tf.distribute.InputContext()
    kwargs = dict(global_batch_size=32, seed=7)  # 12 steps per epoch (384 of the 400 records)
    full = [_record_ids(x) for x, _ in train.train_dataset_fn(**kwargs)(ctx).take(30)]
    # Resume at step 17 (epoch 1, step 5 of it): the same batches as the uninterrupted stream.
    resumed = [
        _record_ids(x) for x, _ in train.train_dataset_fn(start_step=17, **kwargs)(ctx).take(13)
    ]
    np.testing.assert_array_equal(np.stack(full[17:]), np.stack(resumed))
    # Each epoch: distinct records, in a shard order that is a function of (seed, epoch).
    for epoch in (0, 1):
        ids = np.concatenate(full[12 * epoch : 12 * epoch + 12])
        assert len(set(ids)) == 384
        # Interleaving 4 shards of 100 consecutive ids: the first 64-record block holds the first 16
        # of each shard, shuffled within the block (no record leaves its block).
        assert sorted(ids[:64]) == sorted(100 * s + k for s in range(4) for k in range(16))
        assert not np.array_equal(ids[:64], np.sort(ids[:64]))
    assert not np.array_equal(full[0], full[12])  # epochs differ
    # One shard at a time: epoch e reads the shards in the order epoch_permutation(4, seed, e).
    one_by_one = tfrecords.RecordShards(
        train.files, 400, (4, 4, 1), cycle_length=1, shuffle_buffer=100
    )
    stream = [_record_ids(x) for x, _ in one_by_one.train_dataset_fn(**kwargs)(ctx).take(24)]
    for epoch in (0, 1):
        ids = np.concatenate(stream[12 * epoch : 12 * epoch + 12])
        shard_order = input_pipeline.epoch_permutation(4, 7, epoch).numpy()
        np.testing.assert_array_equal([ids[100 * k] // 100 for k in range(3)], shard_order[:3])
        assert all(len(set(ids[100 * k : 100 * k + 100] // 100)) == 1 for k in range(3))
    # Two input pipelines: each parses its own half of every global batch.
    halves = [
        train.train_dataset_fn(**kwargs)(tf.distribute.InputContext(2, i, 2)) for i in range(2)
    ]
    for whole, (x0, _), (x1, _) in zip(full, *[h.take(12) for h in halves]):
        np.testing.assert_array_equal(whole, np.concatenate([_record_ids(x0), _record_ids(x1)]))
    fn, batches = input_pipeline.eval_dataset_fn(listed.splits["test"], global_batch_size=32)
    rows = list(fn(ctx).take(batches))
    weights = np.concatenate([w for _, _, w in rows])
    np.testing.assert_array_equal(
        np.concatenate([_record_ids(x) for x, _, _ in rows])[weights > 0], np.arange(50)
    )


def test_a_file_that_is_not_tfrecord_fails_before_training(tmp_path):
    _numbered_shards(str(tmp_path))
    (tmp_path / "train-00002-of-00004.tfrecord").write_bytes(b"this is no TFRecord file at all")
    with pytest.raises(
        datasets.DataError, match=r"train-00002-of-00004.tfrecord: not a TFRecord file"
    ):
        tfrecords.list_tfrecords(str(tmp_path))
