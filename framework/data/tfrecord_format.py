"""The TFRecord shards' format and layout on disk: one tf.train.Example per image (raw uint8 pixels,
shape, label), `{split}-{i:05d}-of-{n:05d}.tfrecord` shards, and `{split}.json` beside them (the
records per shard, the image shape, the class names). Writing, parsing a batch of records, and
finding a directory's splits; framework/data/tfrecords.py reads and streams them."""

import json
import os
import re
from typing import Sequence

import numpy as np
import tensorflow as tf

from framework.data.arrays import DataError

SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")
FORMAT = "tfloops-raw-uint8-v1"


def shard_paths(out_dir: str, split: str, num_shards: int) -> list[str]:
    return [
        os.path.join(out_dir, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord")
        for i in range(num_shards)
    ]


def _example(image: np.ndarray, label: int) -> bytes:
    feature = tf.train.Feature
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                "shape": feature(int64_list=tf.train.Int64List(value=list(image.shape))),
                "label": feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
        )
    ).SerializeToString()


def _write_json(path, obj):
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def write_tfrecords(
    x: np.ndarray,
    y: np.ndarray,
    out_dir: str,
    split: str,
    num_shards: int = 1,
    *,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Writes (x, y) as `num_shards` shards of consecutive examples; returns their paths.

    Shards are written under temporary names and renamed at the end; older shards of the same split
    (another shard count) are removed, so `{split}-*` never mixes two writes.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"`x` must be uint8 images (N, H, W, C), got {x.dtype} {x.shape}")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(
            f"`y` must be {len(x)} non-negative integer labels, got {y.dtype} {y.shape}"
        )
    if len(x) == 0:
        raise DataError(f"{out_dir}: the {split} split is empty; nothing to write")
    if not isinstance(num_shards, int) or not 1 <= num_shards <= len(x):
        raise ValueError(
            f"`num_shards` ({num_shards}) must be an integer in [1, {len(x)}] (the examples)"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.]+", split):
        raise ValueError(f"`split` ({split!r}) must be a plain name such as 'train'")
    tf.io.gfile.makedirs(out_dir)
    paths = shard_paths(out_dir, split, num_shards)
    counts = {}
    for path, idx in zip(paths, np.array_split(np.arange(len(x)), num_shards)):
        with tf.io.TFRecordWriter(path + ".tmp") as writer:
            for i in idx:
                writer.write(_example(x[i], y[i]))
        counts[os.path.basename(path)] = len(idx)
    for old in tf.io.gfile.glob(os.path.join(out_dir, f"{split}-*-of-*.tfrecord")):
        m = SHARD_RE.match(os.path.basename(old))
        if m and m["split"] == split and old not in paths:
            tf.io.gfile.remove(old)
    for path in paths:
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    _write_json(
        os.path.join(out_dir, f"{split}.json"),
        {
            "format": FORMAT,
            "num_examples": len(x),
            "image_shape": list(x.shape[1:]),
            "class_names": list(class_names) if class_names is not None else None,
            "shards": counts,
        },
    )
    return paths


def shard_files(pattern: str) -> list[str]:
    files = sorted(
        f for f in tf.io.gfile.glob(pattern) if not f.endswith(".tmp")
    )  # .tmp: being written
    if not files:
        raise DataError(
            f"no TFRecord files match {pattern!r}; write them with "
            f"`python -m framework.data.tfrecords --dataset=NAME --out_dir=DIR`"
        )
    return files


FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "shape": tf.io.FixedLenFeature([3], tf.int64, default_value=[0, 0, 0]),
    "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def parse_batch(records, filename):
    """Parses a batch of records from one file: vectorised: one parse op per batch instead of one
    per example."""
    f = tf.io.parse_example(records, FEATURES)
    shape, label = f["shape"], f["label"]
    ok = tf.reduce_all(shape > 0) & tf.reduce_all(label >= 0) & tf.reduce_all(shape == shape[:1])
    ok &= tf.reduce_all(
        tf.strings.length(f["image"]) == tf.cast(tf.reduce_prod(shape, axis=1), tf.int32)
    )
    check = tf.debugging.Assert(
        ok,
        [
            "Malformed TFRecord example in",
            filename,
            ": image, shape or label missing "
            "or inconsistent, or images of different sizes in one file; rewrite it "
            "with python -m framework.data.tfrecords",
        ],
    )
    with tf.control_dependencies([check]):
        images = tf.io.decode_raw(f["image"], tf.uint8)
    images = tf.reshape(images, tf.concat([tf.shape(images)[:1], tf.cast(shape[0], tf.int32)], 0))
    return images, tf.cast(label, tf.int32)


def expected_counts(files) -> dict[str, tuple[int, str]]:
    """{file: (records it should hold, the index saying so)} for the shards that `{split}.json`
    lists."""
    expected, indexes = {}, {}
    for path in files:
        m = SHARD_RE.match(os.path.basename(path))
        index = os.path.join(os.path.dirname(path), f"{m['split']}.json") if m else None
        if index and index not in indexes:
            indexes[index] = read_index(index).get("shards", {})
        if index and os.path.basename(path) in indexes[index]:
            expected[path] = (indexes[index][os.path.basename(path)], index)
    return expected


def read_index(index) -> dict:
    """The `{split}.json` written beside the shards, or {} when there is none."""
    if not tf.io.gfile.exists(index):
        return {}
    try:
        with tf.io.gfile.GFile(index) as f:
            info = json.load(f)
        if not isinstance(info, dict) or not isinstance(info.get("shards", {}), dict):
            raise ValueError("not a dict of shards")
        return info
    except ValueError as e:
        raise DataError(f"{index} is truncated or corrupt ({e}); write the shards again") from e


def shard_splits(directory: str) -> dict[str, tuple[list[str], dict]]:
    """{'train', 'test'[, 'val']: (shard files, the split's index {split}.json)}; a DataError where
    the index lists a shard that is not there. Both loaders split here."""
    splits = {}
    for split in ("train", "test", "val"):
        pattern = os.path.join(directory, f"{split}-*-of-*.tfrecord")
        if split == "val" and not tf.io.gfile.glob(pattern):
            continue
        files = shard_files(pattern)
        index = read_index(os.path.join(directory, f"{split}.json"))
        missing = sorted(set(index.get("shards", {})) - {os.path.basename(f) for f in files})
        if missing:
            raise DataError(
                f"{directory}: shards {missing} listed in {split}.json are missing; copy them "
                f"again or write the shards again"
            )
        splits[split] = (files, index)
    return splits
