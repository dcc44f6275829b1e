"""Sources the tf.data pipeline reads itself (from files while training, bounded memory) instead of
arrays in memory: `StreamedSource`, the interface the engine asks of them, and `IndexedSource`,
which streams any indexable list of examples (an image folder's files) through the arrays' index
stream (framework/index_stream.py), so its order and exact resume are the arrays'
(`framework/data/streaming.py` chooses between the two).
"""

import abc

import numpy as np
import tensorflow as tf

from framework.index_stream import (
    AUTOTUNE,
    DatasetFn,
    _eval_indices,
    _finish,
    _split_for_replicas,
    check_train_stream,
    train_index_batches,
)


class StreamedSource(abc.ABC):
    """Examples the tf.data pipeline reads itself instead of arrays in memory: the engine asks only
    for `num_examples`, `example_spec` (one example's parts, e.g. image and label) and the dataset
    functions."""

    num_examples: int
    example_spec: tuple  # of tf.TensorSpec, one per part of an example
    skips_unreadable: bool = (
        False  # an example that cannot be read is skipped (see _fill_unreadable)
    )

    @abc.abstractmethod
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
        """As `train_dataset_fn` for arrays: per-replica chunks [K, b, ...], data order f(seed,
        epoch)."""

    @abc.abstractmethod
    def eval_dataset_fn(self, *, global_batch_size: int) -> tuple[DatasetFn, int]:
        """As `eval_dataset_fn` for arrays: fixed order, every example once per pass, weight 0 on
        padding."""

    @abc.abstractmethod
    def head(self, n: int) -> tuple[np.ndarray, ...]:
        """The first `n` examples as arrays (e.g. airbench's whitening images, a plot's test
        images)."""


class IndexedSource(StreamedSource):
    """A streamed source whose examples are numbered 0..N-1 and read one by one (`load_example`),
    e.g. an image folder's files: the train stream is the arrays' index stream, so the data order is
    f(seed, epoch), each input pipeline reads only its own rows, and a resume at step S skips
    indices only (exact). Files are read and decoded in parallel (`num_parallel_calls`), in
    deterministic order."""

    @abc.abstractmethod
    def load_example(self, index: tf.Tensor) -> tuple[tuple, tf.Tensor]:
        """(parts, readable) for example `index` (an int64 scalar), run in the tf.data map. An
        unreadable example (readable False) has parts of the right shape (e.g. zeros)."""

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
        stop_step: int | None = None,
    ) -> DatasetFn:
        kwargs = dict(
            global_batch_size=global_batch_size,
            seed=seed,
            start_step=start_step,
            steps_per_fetch=steps_per_fetch,
            host_fn=host_fn,
            example_fn=example_fn,
            stop_step=stop_step,
        )
        check_train_stream(
            self.num_examples, global_batch_size, steps_per_fetch, start_step, host_fn
        )
        fetch = steps_per_fetch

        keep_element = (
            host_fn is not None or example_fn is not None
        )  # else the rows carry the parts alone

        def finish(parts, *kept):
            """[K * b] rows -> the [K, b] chunk the array path gives (example_fn, host_fn as
            there)."""
            parts, *kept = tf.nest.map_structure(
                lambda t: tf.reshape(t, [fetch, -1, *t.shape[1:]]), (parts, *kept)
            )
            readable = kept.pop(0) if self.skips_unreadable else None
            element = kept.pop(0) if keep_element else None
            if self.skips_unreadable:
                parts = _fill_unreadable(parts, readable)
            index = element[0] if host_fn is not None else element
            if host_fn is not None:
                parts, index = (
                    tuple(p[0] for p in parts),
                    tf.nest.map_structure(lambda t: t[0], index),
                )
            if example_fn is not None:
                parts = tuple(example_fn(parts, *index))
            if host_fn is not None:
                parts = tuple(
                    tf.expand_dims(t, 0) for t in host_fn(parts, element[1][0, 0], element[2][0, 0])
                )
            return parts

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = ctx.get_per_replica_batch_size(global_batch_size)
            batches = train_index_batches(ctx, self.num_examples, **kwargs)
            rows = self._read(
                batches,
                lambda e: _first_tensor(e),
                fetch * per_replica,
                num_parallel_calls,
                keep_readable=self.skips_unreadable,
                keep_element=keep_element,
            )
            # One batch of K * b rows, reshaped to [K, b] in `finish`: .batch(b).batch(K) copied
            # each chunk twice.
            chunks = rows.batch(fetch * per_replica, drop_remainder=True)
            return _finish(chunks.map(finish, num_parallel_calls=num_parallel_calls), prefetch)

        return dataset_fn

    def eval_dataset_fn(self, *, global_batch_size: int) -> tuple[DatasetFn, int]:
        index, weight, num_batches = _eval_indices(self.num_examples, global_batch_size)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = ctx.get_per_replica_batch_size(global_batch_size)
            pairs = tf.data.Dataset.from_tensor_slices((index, weight))
            batches = _split_for_replicas(pairs.repeat(), ctx, global_batch_size)
            rows = self._read(batches, lambda e: e[0], per_replica, AUTOTUNE)
            # An unreadable example in an evaluation counts for nothing (weight 0).
            return _finish(
                rows.batch(per_replica, drop_remainder=True).map(
                    lambda parts, readable, e: parts + (e[1] * tf.cast(readable, tf.float32),)
                )
            )

        return dataset_fn, num_batches

    def head(self, n: int) -> tuple[np.ndarray, ...]:
        n = min(n, self.num_examples)
        rows = (
            tf.data.Dataset.range(n)
            .map(lambda i: self.load_example(i)[0], num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(n)
        )
        return tuple(t.numpy() for t in next(iter(rows)))

    def _read(
        self,
        batches,
        index_of,
        per_element,
        num_parallel_calls,
        keep_readable=True,
        keep_element=True,
    ):
        """Elements of [..., b] index tensors -> one element per example: (parts[, readable][,
        element row]), readable and the row only where asked for (each part of an element costs per
        example)."""

        def flatten(*element):
            element = element if len(element) > 1 else element[0]
            return tf.nest.map_structure(
                lambda t: tf.reshape(t, [-1]) if t.shape.rank else tf.fill([per_element], t),
                element,
            )

        def read(*element):
            element = element if len(element) > 1 else element[0]
            parts, readable = self.load_example(index_of(element))
            return (
                (tuple(parts),)
                + ((readable,) if keep_readable else ())
                + ((element,) if keep_element else ())
            )

        # unbatch, not flat_map over from_tensor_slices: one dataset fewer per element.
        return (
            batches.map(flatten)
            .unbatch()
            .map(read, num_parallel_calls=num_parallel_calls, deterministic=True)
        )


def _first_tensor(element):
    """The example index in an element row: index, (index, epoch) or ((index[, epoch]), step,
    replica)."""
    while isinstance(element, tuple):
        element = element[0]
    return element


def _fill_unreadable(parts, readable):
    """Rows [K, b, ...] whose example could not be read take a copy of the first readable row of the
    same batch: batch shapes and the data order stay as they are (so resume stays exact), and the
    unreadable example contributes nothing of its own. A batch with no readable row fails."""
    check = tf.debugging.Assert(
        tf.reduce_all(tf.reduce_any(readable, axis=-1)),
        ["every example of a batch is unreadable (corrupt files)"],
    )
    with tf.control_dependencies([check]):
        first = tf.argmax(tf.cast(readable, tf.int32), axis=-1, output_type=tf.int32)
    position = tf.broadcast_to(tf.range(tf.shape(readable)[-1]), tf.shape(readable))
    source = tf.where(readable, position, first[..., None])
    return tuple(tf.gather(p, source, batch_dims=source.shape.rank - 1) for p in parts)
