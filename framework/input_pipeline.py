"""tf.data pipelines from in-memory arrays, built per input pipeline for a tf.distribute strategy.

The data order is a pure function of (seed, epoch): each epoch is a stateless permutation of the
example indices. A distributed iterator cannot be checkpointed (tensorflow#56372), so resuming at
step S rebuilds the stream from epoch S // steps_per_epoch and skips the remaining batches, which
only touches indices, never images.

Indices are batched first and images gathered a whole batch at a time (one `tf.gather` per batch
instead of one map call per example), which keeps a 2-core CPU ahead of a small model.
Static shapes everywhere (`drop_remainder` semantics) so the same step compiles for TPU.

A source is either arrays (held in memory, gathered per batch) or a `StreamedSource`, which builds
its own tf.data pipeline (framework/streamed_source.py). The index stream both share (the order, the
resume, the split per replica) is framework/index_stream.py; this module re-exports their names.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from framework.index_stream import (  # noqa: F401  re-exported: input_pipeline's names
    AUTOTUNE,
    DatasetFn,
    _eval_indices,
    _finish,
    _split_for_replicas,
    check_train_stream,
    epoch_permutation,
    steps_per_epoch,
    train_index_batches,
    train_indices,
)
from framework.streamed_source import IndexedSource, StreamedSource  # noqa: F401  re-exported


def num_examples(source) -> int:
    """Examples in a source: arrays or a StreamedSource."""
    return source.num_examples if isinstance(source, StreamedSource) else len(source[0])


def example_shapes(source) -> list[list[int]]:
    """[[N, *part shape], ...]: what the arrays' shapes would be (the run record compares them)."""
    if isinstance(source, StreamedSource):
        return [[source.num_examples, *spec.shape.as_list()] for spec in source.example_spec]
    return [list(a.shape) for a in source]


def example_nbytes(source) -> int:
    """Bytes of one example, all parts together."""
    if isinstance(source, StreamedSource):
        return sum(spec.shape.num_elements() * spec.dtype.size for spec in source.example_spec)
    return sum(a[0].nbytes for a in source)


def train_dataset_fn(
    arrays,
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
    """Endless stream of per-replica chunks `(array_0[idx], ...)` of `steps_per_fetch` batches each.

    Each element holds the batches of K = `steps_per_fetch` consecutive steps, shaped [K, b, ...]:
    one `next()` feeds K steps, which divides the per-element cost of tf.data (a 2-core CPU
    running a small model was input-bound at K=1). K must divide the epoch length and `start_step`.

    `host_fn(batch, step, replica_id) -> batch`, if given, runs in the tf.data map on the CPU
    (the "augment on the host" alternative to augmenting inside the step).
    `example_fn(rows, index, epoch) -> rows`, if given, transforms the gathered rows knowing each
    example's id and epoch (e.g. `augment.example_ops.alternating_flip`); it runs in the gather.
    `num_parallel_calls` and `prefetch` (0: none) are there for the input benchmark's sweep.
    `arrays` may be a StreamedSource instead: it builds the same stream from its files.
    `stop_step`: the same batches, but a finite stream of steps [start_step, stop_step) whose source
    is the chunk numbers, which the tf.data service can split over its workers
    (framework/data_service.py).
    """
    kwargs = dict(
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
        steps_per_fetch=steps_per_fetch,
        host_fn=host_fn,
        example_fn=example_fn,
        num_parallel_calls=num_parallel_calls,
        prefetch=prefetch,
        **({} if stop_step is None else {"stop_step": stop_step}),
    )
    if isinstance(arrays, StreamedSource):
        return arrays.train_dataset_fn(**kwargs)
    check_train_stream(len(arrays[0]), global_batch_size, steps_per_fetch, start_step, host_fn)

    def gather(tensors, index):
        """The rows of `index` (or of (index, epoch), transformed by example_fn)."""
        if example_fn is None:
            return tuple(tf.gather(t, index) for t in tensors)
        index, epoch = index
        return tuple(example_fn(tuple(tf.gather(t, index) for t in tensors), index, epoch))

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        tensors = _host_tensors(arrays)
        batches = train_index_batches(ctx, len(arrays[0]), **kwargs)
        if host_fn is None:  # the lean path: nothing but indices, then one gather per batch
            load = lambda *index: gather(tensors, index if len(index) > 1 else index[0])  # noqa: E731
        else:  # host augmentation needs each batch's step and replica id for its seed
            load = lambda index, step, replica: tuple(  # noqa: E731
                tf.expand_dims(t, 0)
                for t in host_fn(
                    gather(tensors, tf.nest.map_structure(lambda i: i[0], index)), step, replica
                )
            )
        return _finish(batches.map(load, num_parallel_calls=num_parallel_calls), prefetch)

    return dataset_fn


def eval_dataset_fn(arrays, *, global_batch_size: int) -> tuple[DatasetFn, int]:
    """Repeated passes over all examples in fixed order, padded to whole batches.

    Each element is `(array_0[idx], ..., weight)`: padding rows have weight 0, so metrics count
    every real example exactly once while every batch keeps its static shape.
    Returns the dataset function and the number of batches in one pass. `arrays` may be a
    StreamedSource: it streams the same batches from its files.
    """
    if isinstance(arrays, StreamedSource):
        return arrays.eval_dataset_fn(global_batch_size=global_batch_size)
    index, weight, num_batches = _eval_indices(len(arrays[0]), global_batch_size)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        tensors = _host_tensors(arrays)
        pairs = tf.data.Dataset.from_tensor_slices((index, weight))
        batches = _split_for_replicas(pairs.repeat(), ctx, global_batch_size)

        def load(idx, w):
            return tuple(tf.gather(t, idx) for t in tensors) + (w,)

        return _finish(batches.map(load, num_parallel_calls=AUTOTUNE))

    return dataset_fn, num_batches


def synthetic_dataset_fn(
    arrays: Sequence[np.ndarray], *, global_batch_size: int, seed: int = 0, steps_per_fetch: int = 1
) -> DatasetFn:
    """One fixed batch of random data shaped like `arrays`, repeated: times the step alone.

    Elements are chunks of `steps_per_fetch` copies of it, like train_dataset_fn's, so a fetch costs
    what it costs on real data."""

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        rng = np.random.default_rng(seed)
        batch = []
        for array in arrays:
            shape = (per_replica,) + array.shape[1:]
            high = int(array.max()) + 1 if array.dtype.kind in "iu" else 1
            batch.append(
                tf.constant(
                    rng.integers(0, high, shape).astype(array.dtype)
                    if array.dtype.kind in "iu"
                    else rng.random(shape, np.float32)
                )
            )
        chunk = tuple(tf.repeat(tf.expand_dims(t, 0), steps_per_fetch, axis=0) for t in batch)
        return tf.data.Dataset.from_tensors(chunk).repeat().prefetch(AUTOTUNE)

    return dataset_fn


def _host_tensors(arrays):
    with tf.device("/cpu:0"):
        return [tf.constant(a) for a in arrays]
