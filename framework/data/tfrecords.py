"""TFRecord shards of uint8 images and int32 labels: write, read, and a converter command.

Each record is a tf.train.Example with
    image  bytes      the raw uint8 pixels, H*W*C bytes in C order (not PNG: an exact round trip and
           no
                      encode/decode cost, for H*W*C bytes per image on disk)
    shape  int64 x 3  (H, W, C)
    label  int64
Shards are named `{split}-{i:05d}-of-{n:05d}.tfrecord`. Beside them `{split}.json` holds the number
of records in each shard (so a truncated shard is caught: TFRecord readers stop at a cut silently),
the image shape and the class names.

    python -m framework.data.tfrecords --dataset=cifar10 --out_dir=DIR [--data_dir=DIR] [--num_shards=N]
    python -m framework.data.tfrecords --image_folder=PATH --out_dir=DIR [--image_size=64] [--on_corrupt=skip]

`load_tfrecord_dataset` reads every shard into memory; `list_tfrecords` returns `RecordShards`
sources that stream them while training (bounded memory). What a streamed training run guarantees:
    - epoch e reads the shards in the order `epoch_permutation(num_shards, seed, e)`, interleaving
      `cycle_length` of them record by record, then permutes each block of `shuffle_buffer`
      consecutive records with a stateless permutation of (seed, e, block) (at most that many
      records are held); each epoch is its first steps_per_epoch * global_batch_size records (the
      remainder is dropped, as for arrays);
    - so the whole record order is a function of (seed, epoch), and a resume at step S is exact: it
      starts at epoch S // steps_per_epoch and skips the records before S (read again, not parsed),
      so the batches after S are those of an uninterrupted run (tests/test_tfrecords.py checks
      this);
    - with several input pipelines, each reads every shard and parses only its own slice of each
      global batch: no record twice, none missing, the same batches as one pipeline (files are read
      P times);
    - `{split}.json`'s counts are trusted: a shard cut short ends its epochs early without an error
      (the in-memory path checks the counts). Without `{split}.json` the shards are counted once, by
      reading them.
"""  # noqa: E501

import os
import sys
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import flags

from framework.data import datasets
from framework.data.datasets import ArrayDataset, DataError, tf_error_text
from framework.data.image_folder import load_image_folder
from framework.data.record_shards import RecordShards
from framework.data.streaming import StreamedSplits
from framework.data.tfrecord_format import (  # noqa: F401  write_tfrecords, shard_paths: re-exported
    FEATURES,
    SHARD_RE,
    expected_counts,
    parse_batch,
    read_index,
    shard_files,
    shard_paths,
    shard_splits,
    write_tfrecords,
)


def read_tfrecords(
    pattern: str, *, image_shape: Sequence[int] | None = None, num_parallel_reads: int | None = None
) -> tf.data.Dataset:
    """A dataset of (uint8 image (H, W, C), int32 label) from the shards matching `pattern`, parsed
    in parallel.

    Shards are read one after another in name order (so the order is the written order) unless
    `num_parallel_reads` is set, which interleaves that many shards. `image_shape` makes the shape
    static. A malformed example fails with the file's name; a truncated or bit-flipped shard fails
    with TF's DataLossError (use `load_tfrecords` to have those named too).
    """
    batches = _batches(shard_files(pattern), image_shape, num_parallel_reads)
    return batches.map(lambda images, labels, filename: (images, labels)).unbatch()


def _batches(files, image_shape=None, num_parallel_reads=None) -> tf.data.Dataset:
    """(images, labels, filename) batches of up to 256 parsed examples, each batch from one file."""

    def per_file(f):
        def parse(records):
            images, labels = parse_batch(records, f)
            if image_shape is not None:
                images = tf.ensure_shape(images, [None, *image_shape])
            return images, labels, f

        return tf.data.TFRecordDataset(f).batch(256).map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    files = tf.data.Dataset.from_tensor_slices(files)
    if num_parallel_reads is None:
        return files.flat_map(per_file)
    return files.interleave(
        per_file,
        cycle_length=num_parallel_reads,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _first_bad_file(files) -> str | None:
    """Reads the files one by one (slow, only after a failure) to name the one that fails."""
    for path in files:
        try:
            for _ in _batches([path]):
                pass
        except tf.errors.OpError:
            return path
    return None


def load_tfrecords(pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """All examples matching `pattern` as arrays (x uint8 (N, H, W, C), y int32 (N,)), in file-name
    order. A malformed, truncated or corrupt shard gives a DataError naming it."""
    files = shard_files(pattern)
    xs, ys, counts, shapes = [], [], dict.fromkeys(files, 0), {}
    try:
        for x, y, path in _batches(files).as_numpy_iterator():
            xs.append(x)
            ys.append(y)
            counts[path.decode()] += len(y)
            shapes.setdefault(x.shape[1:], path.decode())
    except tf.errors.OpError as e:
        path = _first_bad_file(files) or pattern
        raise DataError(
            f"{path}: malformed, truncated or corrupt TFRecord file ({tf_error_text(e)}); "
            f"write it again"
        ) from e
    for path, (expected, index) in expected_counts(files).items():
        if counts[path] != expected:  # TF's reader stops at a cut record without an error
            raise DataError(
                f"{path}: holds {counts[path]} records but {index} says {expected}: the file is "
                f"truncated or corrupt; write it again"
            )
    if len(shapes) > 1:
        (s1, f1), (s2, f2) = list(shapes.items())[:2]
        raise DataError(
            f"{pattern}: the files hold images of different sizes, e.g. {f1} {s1} and {f2} {s2}"
        )
    return np.concatenate(xs), np.concatenate(ys)


def load_tfrecord_dataset(directory: str, *, name: str | None = None) -> ArrayDataset:
    """The train/test (and val, when written) shards in `directory` as an ArrayDataset."""
    splits, class_names = {}, None
    for split, (files, index) in shard_splits(directory).items():
        splits[split] = load_tfrecords(os.path.join(directory, f"{split}-*-of-*.tfrecord"))
        class_names = class_names or index.get("class_names")
    if class_names is None:  # shards written without names: number the classes
        class_names = [str(i) for i in range(int(max(y.max() for _, y in splits.values())) + 1)]
    val = splits.get("val", (None, None))
    return ArrayDataset(
        name or os.path.basename(os.path.normpath(directory)),
        *splits["train"],
        *splits["test"],
        tuple(class_names),
        x_val=val[0],
        y_val=val[1],
    )


def list_tfrecords(
    directory: str, *, image_size: int | None = None, name: str | None = None, **shard_options
) -> StreamedSplits:
    """The shards in `directory` for streaming. Checked up front, before any training: every shard
    `{split}.json` lists is there, and the first record of every shard parses as one of ours (a file
    that is not TFRecord fails here, naming it). `shard_options`: RecordShards' cycle_length,
    shuffle_buffer."""
    splits, class_names, shapes = {}, None, {}
    for split, (files, index) in shard_splits(directory).items():
        for path in files:
            shapes.setdefault(_first_record_shape(path), path)
        counts = index.get("shards", {})
        if all(os.path.basename(f) in counts for f in files):
            count = sum(counts[os.path.basename(f)] for f in files)
        else:  # no index: count the records once
            count = sum(1 for _ in tf.data.TFRecordDataset(files))
        splits[split] = (files, count)
        class_names = class_names or index.get("class_names")
    if len(shapes) > 1:
        (s1, f1), (s2, f2) = list(shapes.items())[:2]
        raise DataError(
            f"{directory}: the shards hold images of different sizes, e.g. {f1} {s1} and {f2} {s2}"
        )
    stored = next(iter(shapes))
    if (
        class_names is None
    ):  # shards written without names: number the classes from the first records
        labels = tfrecords_labels_head([f for files, _ in splits.values() for f in files])
        class_names = [str(i) for i in range(int(max(labels)) + 1)]
    sources = {
        split: RecordShards(files, count, stored, image_size=image_size, **shard_options)
        for split, (files, count) in splits.items()
    }
    return StreamedSplits(
        name or os.path.basename(os.path.normpath(directory)),
        tuple(class_names),
        sources["train"].image_shape,
        sources,
    )


def _first_record_shape(path) -> tuple[int, ...]:
    """The image shape of a shard's first record; DataError naming the file if it is not one of
    ours."""
    try:
        record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        if record is None:
            raise DataError(f"{path}: empty TFRecord file; write the shards again")
        f = tf.io.parse_single_example(record, FEATURES)
    except tf.errors.OpError as e:
        raise DataError(
            f"{path}: not a TFRecord file of images, or corrupt ({tf_error_text(e)}); write it "
            f"with python -m framework.data.tfrecords"
        ) from e
    shape = tuple(int(d) for d in f["shape"].numpy())
    if min(shape) <= 0 or int(f["label"]) < 0 or len(f["image"].numpy()) != int(np.prod(shape)):
        raise DataError(
            f"{path}: its records are not images written by python -m framework.data.tfrecords "
            f"(image, shape or label missing or inconsistent); write it again"
        )
    return shape


def tfrecords_labels_head(files, n: int = 10_000) -> np.ndarray:
    """Labels of the first `n` records (to number the classes of shards written without names)."""
    labels = (
        tf.data.TFRecordDataset(files)
        .take(n)
        .map(lambda r: tf.io.parse_single_example(r, FEATURES)["label"])
    )
    return np.fromiter(labels.as_numpy_iterator(), np.int64)


def convert(ds: ArrayDataset, out_dir: str, num_shards: int = 1) -> dict[str, list[str]]:
    """Writes every split of `ds`: train in `num_shards` shards, smaller splits in proportionally
    fewer."""
    written = {}
    for split in ("train", "test", "val"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if x is not None:
            shards = max(1, min(len(x), num_shards, round(num_shards * len(x) / len(ds.x_train))))
            written[split] = write_tfrecords(
                x, y, out_dir, split, shards, class_names=ds.class_names
            )
    return written


def define_flags(flag_values: flags.FlagValues) -> flags.FlagValues:
    """The converter's flags, on their own FlagValues so importing this module defines no global
    flags."""
    kw = dict(flag_values=flag_values)
    flags.DEFINE_enum("dataset", None, datasets.DATASETS, "Dataset to convert.", **kw)
    flags.DEFINE_string(
        "image_folder", None, "Convert this image folder (one sub-folder per class) instead.", **kw
    )
    flags.DEFINE_string("out_dir", None, "Folder for the shards.", **kw)
    flags.DEFINE_string(
        "data_dir",
        None,
        "Where the dataset files are (default: $DATA_DIR, else ~/.keras/datasets).",
        **kw,
    )
    flags.DEFINE_integer(
        "num_shards",
        1,
        "Shards for the train split; smaller splits get proportionally fewer.",
        lower_bound=1,
        **kw,
    )
    flags.DEFINE_integer(
        "image_size", None, "Resize images to this size (square).", lower_bound=1, **kw
    )
    flags.DEFINE_integer(
        "train_examples", None, "Keep this many training examples (seeded).", lower_bound=1, **kw
    )
    flags.DEFINE_integer(
        "seed", 0, "Seed for --train_examples and the image-folder test split.", **kw
    )
    flags.DEFINE_float(
        "test_split", 0.2, "Image folders without train/ and test/: fraction held out.", **kw
    )
    flags.DEFINE_enum(
        "on_corrupt",
        "fail",
        ["fail", "skip"],
        "Image folders: a corrupt image fails or is skipped.",
        **kw,
    )
    flags.DEFINE_boolean(
        "download", True, "Allow keras.datasets to download a dataset not found locally.", **kw
    )
    return flag_values


def main(argv: Sequence[str] | None = None) -> int:
    """The converter command; returns the exit status (errors are printed, not raised)."""
    fv = define_flags(flags.FlagValues())
    argv = list(argv if argv is not None else sys.argv)
    if any(a in ("-h", "--help", "-help") for a in argv[1:]):
        print(f"{__doc__}\nFlags:\n{fv.get_help()}")
        return 0
    try:
        rest = fv(argv)
        if len(rest) > 1:
            raise flags.Error(f"unexpected arguments {rest[1:]}")
        if (fv.dataset is None) == (fv.image_folder is None):
            raise flags.Error("pass exactly one of --dataset=NAME or --image_folder=PATH")
        if not fv.out_dir:
            raise flags.Error("pass --out_dir=DIR")
    except flags.Error as e:
        print(f"error: {e} (--help lists the flags)", file=sys.stderr)
        return 2
    try:
        if fv.dataset:
            ds = datasets.load(fv.dataset, fv.data_dir, download=fv.download)
        else:
            ds = _load_folder(fv)
        ds = datasets.make_subsets(
            ds,
            train_examples=fv.train_examples,
            seed=fv.seed,
            image_size=fv.image_size if fv.dataset else None,
        )
        written = convert(ds, fv.out_dir, fv.num_shards)
    except ValueError as e:  # DataError and bad values: the message says what to change
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, paths in written.items():
        print(
            f"{split}: {len(getattr(ds, f'y_{split}'))} examples {ds.image_shape} in "
            f"{len(paths)} shard(s) {os.path.join(fv.out_dir, split)}-*.tfrecord"
        )
    return 0


def _load_folder(fv):
    ds = load_image_folder(
        fv.image_folder,
        image_size=fv.image_size,
        on_corrupt=fv.on_corrupt,
        test_split=fv.test_split,
        seed=fv.seed,
    )
    if ds.skipped:
        print(f"skipped {len(ds.skipped)} corrupt image(s), e.g. {ds.skipped[0]}", file=sys.stderr)
    return ds


if __name__ == "__main__":
    sys.exit(main())
