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
from framework.index_stream import (
    AUTOTUNE,
    DatasetFn,
    _eval_indices,
    _finish,
    _split_for_replicas,
    check_train_stream,
    epoch_permutation,
)
from framework.streamed_source import StreamedSource


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


class RecordShards(StreamedSource):
    """TFRecord shards of one split streamed while training (the guarantees are in the module
    docstring)."""

    def __init__(
        self,
        files: Sequence[str],
        num_examples: int,
        stored_shape: Sequence[int],
        *,
        image_size: int | None = None,
        cycle_length: int = 8,
        shuffle_buffer: int = 10_000,
    ):
        self.files, self.num_examples = tuple(files), int(num_examples)
        self.stored_shape = tuple(int(d) for d in stored_shape)
        height, width, channels = self.stored_shape
        self.image_shape = (image_size, image_size, channels) if image_size else self.stored_shape
        self.example_spec = (tf.TensorSpec(self.image_shape, tf.uint8), tf.TensorSpec([], tf.int32))
        self.cycle_length, self.shuffle_buffer = min(cycle_length, len(self.files)), shuffle_buffer

    def parse(self, records):
        """Serialized records [...] -> (uint8 images [..., H, W, C], int32 labels [...])."""
        shape = tf.shape(records)
        f = tf.io.parse_example(tf.reshape(records, [-1]), FEATURES)
        ok = tf.reduce_all(tf.equal(f["shape"], self.stored_shape)) & tf.reduce_all(f["label"] >= 0)
        check = tf.debugging.Assert(
            ok,
            [
                f"Malformed TFRecord example in {os.path.dirname(self.files[0])}: "
                f"image shape other than {self.stored_shape} or label missing; rewrite "
                "the shards with python -m framework.data.tfrecords"
            ],
        )
        with tf.control_dependencies([check]):
            images = tf.reshape(tf.io.decode_raw(f["image"], tf.uint8), [-1, *self.stored_shape])
        if self.image_shape != self.stored_shape:
            images = tf.image.resize(images, self.image_shape[:2], antialias=True)
            images = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
        images = tf.reshape(images, tf.concat([shape, self.image_shape], 0))
        return images, tf.reshape(tf.cast(f["label"], tf.int32), shape)

    def train_dataset_fn(
        self,
        *,
        global_batch_size: int,
        seed: int,
        start_step: int = 0,
        steps_per_fetch: int = 1,
        host_fn=None,
        example_fn=None,
        num_parallel_calls=AUTOTUNE,
        prefetch=AUTOTUNE,
    ) -> DatasetFn:
        if example_fn is not None:
            raise ValueError(
                "an example_fn (e.g. --alternating_flip) needs example ids, which streamed "
                "TFRecord shards do not have; load them in memory (--data_in_memory=yes)"
            )
        per_epoch = check_train_stream(
            self.num_examples, global_batch_size, steps_per_fetch, start_step, host_fn
        )
        start_epoch, skip = divmod(start_step, per_epoch)
        batch = global_batch_size

        def epoch_batches(epoch):
            names = tf.gather(
                tf.constant(self.files), epoch_permutation(len(self.files), seed, epoch)
            )
            records = tf.data.Dataset.from_tensor_slices(names).interleave(
                tf.data.TFRecordDataset,
                cycle_length=self.cycle_length,
                block_length=1,
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )

            # A stateless block shuffle: each run of `shuffle_buffer` records is permuted by (seed,
            # epoch, block). Unlike Dataset.shuffle (whose seed is a Python int, or mixed with the
            # global seed), the order is a function of (seed, epoch) alone.
            def permute(block, window):
                key = tf.random.experimental.stateless_fold_in(
                    tf.stack([tf.cast(seed, tf.int64), epoch]), block
                )
                return tf.gather(
                    window,
                    tf.argsort(tf.random.stateless_uniform(tf.shape(window), key), stable=True),
                )

            records = records.batch(self.shuffle_buffer).enumerate().map(permute).unbatch()
            return records.take(per_epoch * batch).batch(batch, drop_remainder=True)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            # Skipped batches are raw strings: read again on resume, never parsed.
            batches = (
                tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
                .flat_map(epoch_batches)
                .skip(skip)
            )
            if host_fn is None:
                chunks = _split_for_replicas(
                    batches.batch(steps_per_fetch, drop_remainder=True), ctx, batch
                )
                return _finish(
                    chunks.map(self.parse, num_parallel_calls=num_parallel_calls), prefetch
                )
            steps = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
            tagged = _split_for_replicas(
                tf.data.Dataset.zip(batches.batch(1), steps), ctx, batch, tagged=True
            )
            load = lambda records, step, replica: tuple(  # noqa: E731
                tf.expand_dims(t, 0) for t in host_fn(self.parse(records[0]), step, replica)
            )
            return _finish(tagged.map(load, num_parallel_calls=num_parallel_calls), prefetch)

        return dataset_fn

    def eval_dataset_fn(self, *, global_batch_size: int) -> tuple[DatasetFn, int]:
        _, weight, num_batches = _eval_indices(self.num_examples, global_batch_size)
        padding = num_batches * global_batch_size - self.num_examples

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            records = self._in_order()
            records = records.take(self.num_examples).concatenate(records.take(1).repeat(padding))
            pairs = tf.data.Dataset.zip(
                records.batch(global_batch_size), tf.data.Dataset.from_tensor_slices(weight)
            )
            batches = _split_for_replicas(pairs.repeat(), ctx, global_batch_size)
            return _finish(
                batches.map(lambda r, w: (*self.parse(r), w), num_parallel_calls=AUTOTUNE)
            )

        return dataset_fn, num_batches

    def head(self, n: int) -> tuple[np.ndarray, ...]:
        records = next(iter(self._in_order().batch(min(n, self.num_examples))))
        return tuple(t.numpy() for t in self.parse(records))

    def _in_order(self) -> tf.data.Dataset:
        """Every record in file-name order (the written order), several files read ahead."""
        return (
            tf.data.Dataset.from_tensor_slices(list(self.files))
            .interleave(
                tf.data.TFRecordDataset,
                cycle_length=1,
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )
            .prefetch(AUTOTUNE)
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
