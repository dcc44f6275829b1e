"""RecordShards: TFRecord shards of one split, streamed while training (a StreamedSource).

framework/data/tfrecords.py lists and checks the shards (list_tfrecords) and says what the stream
guarantees; this is the stream itself: shards interleaved, records shuffled in a buffer, parsed a
batch at a time, resized when asked.
"""

import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from framework.data.tfrecord_format import FEATURES
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


class RecordShards(StreamedSource):
    """TFRecord shards of one split streamed while training (the guarantees are in
    framework/data/tfrecords.py's docstring)."""

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
