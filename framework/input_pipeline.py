"""tf.data pipelines from in-memory arrays, built per input pipeline for a tf.distribute strategy.

The data order is a pure function of (seed, epoch): each epoch is a stateless permutation of the
example indices. A distributed iterator cannot be checkpointed (tensorflow#56372), so resuming at
step S rebuilds the stream from epoch S // steps_per_epoch and skips the remaining batches, which
only touches indices, never images.

Indices are batched first and images gathered a whole batch at a time (one `tf.gather` per batch
instead of one map call per example), which keeps a 2-core CPU ahead of a small model.
Static shapes everywhere (`drop_remainder` semantics) so the same step compiles for TPU.
"""
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    return num_examples // global_batch_size


def epoch_permutation(num_examples: int, seed: int, epoch) -> tf.Tensor:
    """The example order of one epoch: the same for the same (seed, epoch), on every machine."""
    keys = tf.random.stateless_uniform([num_examples], seed=tf.stack([tf.cast(seed, tf.int64),
                                                                       tf.cast(epoch, tf.int64)]))
    return tf.argsort(keys, stable=True)


def train_dataset_fn(arrays: Sequence[np.ndarray], *, global_batch_size: int, seed: int,
                     start_step: int = 0, host_fn=None, num_parallel_calls=AUTOTUNE,
                     prefetch=AUTOTUNE) -> DatasetFn:
    """Endless stream of per-replica batches `(array_0[idx], array_1[idx], ...)`, from `start_step` on.

    `host_fn(batch, step, replica_id) -> batch`, if given, runs in the tf.data map on the CPU
    (the "augment on the host" alternative to augmenting inside the step).
    `num_parallel_calls` and `prefetch` (0: none) are there for the input benchmark's sweep.
    """
    num_examples = len(arrays[0])
    per_epoch = steps_per_epoch(num_examples, global_batch_size)
    if per_epoch == 0:
        raise ValueError(f"global batch {global_batch_size} is larger than the {num_examples} training "
                         "examples: lower --global_batch_size")
    start_epoch, skip = divmod(start_step, per_epoch)

    def epoch_batches(epoch):
        order = epoch_permutation(num_examples, seed, epoch)[: per_epoch * global_batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [per_epoch, global_batch_size]))

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        tensors = _host_tensors(arrays)
        indices = (tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
                   .flat_map(epoch_batches).skip(skip))
        steps = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
        batches = _split_for_replicas(tf.data.Dataset.zip(indices, steps), ctx, global_batch_size)

        def load(index, step, replica):
            batch = tuple(tf.gather(t, index) for t in tensors)
            return host_fn(batch, step, replica) if host_fn else batch

        return _finish(batches.map(load, num_parallel_calls=num_parallel_calls), prefetch)

    return dataset_fn


def eval_dataset_fn(arrays: Sequence[np.ndarray], *, global_batch_size: int) -> tuple[DatasetFn, int]:
    """Repeated passes over all examples in fixed order, padded to whole batches.

    Each element is `(array_0[idx], ..., weight)`: padding rows have weight 0, so metrics count
    every real example exactly once while every batch keeps its static shape.
    Returns the dataset function and the number of batches in one pass.
    """
    num_examples = len(arrays[0])
    num_batches = -(-num_examples // global_batch_size)
    index = np.arange(num_batches * global_batch_size)
    weight = (index < num_examples).astype(np.float32)
    index = np.where(weight > 0, index, 0).reshape(num_batches, global_batch_size)
    weight = weight.reshape(num_batches, global_batch_size)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        tensors = _host_tensors(arrays)
        steps = tf.data.Dataset.range(num_batches)
        pairs = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices((index, weight)), steps)
        batches = _split_for_replicas(pairs.repeat(), ctx, global_batch_size)

        def load(index_and_weight, _step, _replica):
            idx, w = index_and_weight
            return tuple(tf.gather(t, idx) for t in tensors) + (w,)

        return _finish(batches.map(load, num_parallel_calls=AUTOTUNE))

    return dataset_fn, num_batches


def synthetic_dataset_fn(arrays: Sequence[np.ndarray], *, global_batch_size: int, seed: int = 0) -> DatasetFn:
    """One fixed batch of random data shaped like `arrays`, repeated: times the step alone."""
    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch_size)
        rng = np.random.default_rng(seed)
        batch = []
        for array in arrays:
            shape = (per_replica,) + array.shape[1:]
            high = int(array.max()) + 1 if array.dtype.kind in "iu" else 1
            batch.append(tf.constant(rng.integers(0, high, shape).astype(array.dtype)
                                     if array.dtype.kind in "iu" else rng.random(shape, np.float32)))
        return tf.data.Dataset.from_tensors(tuple(batch)).repeat().prefetch(AUTOTUNE)
    return dataset_fn


def _host_tensors(arrays):
    with tf.device("/cpu:0"):
        return [tf.constant(a) for a in arrays]


def _split_for_replicas(batches: tf.data.Dataset, ctx: tf.distribute.InputContext, global_batch_size):
    """Global batches of indices -> this pipeline's per-replica slices, tagged (step, replica id).

    The strategy hands consecutive elements of one pipeline to consecutive replicas, so replica r
    of pipeline p gets rows [(p*R + r)*b, (p*R + r + 1)*b) of the global batch: the global batch is
    the same whatever the number of replicas (the 2-replicas-equal-1 invariant rests on this).
    """
    per_replica = ctx.get_per_replica_batch_size(global_batch_size)
    per_pipeline = global_batch_size // ctx.num_input_pipelines
    replicas_here = per_pipeline // per_replica
    first = ctx.input_pipeline_id * per_pipeline
    first_replica = ctx.input_pipeline_id * replicas_here

    if replicas_here == 1:  # one replica per pipeline: a plain map, cheaper than flat_map per step
        return batches.map(lambda index, step: (
            tf.nest.map_structure(lambda t: t[first:first + per_pipeline], index), step,
            tf.constant(first_replica, tf.int32)))

    def split(index, step):
        rows = tf.nest.map_structure(
            lambda t: tf.reshape(t[first:first + per_pipeline], [replicas_here, per_replica]), index)
        return tf.data.Dataset.from_tensor_slices(
            (rows, tf.fill([replicas_here], step), tf.range(replicas_here, dtype=tf.int32) + first_replica))

    return batches.flat_map(split)


def _finish(dataset: tf.data.Dataset, prefetch=AUTOTUNE) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if prefetch == 0:
        options.autotune.enabled = False  # no hidden prefetch either: the "no prefetch" baseline
    else:
        dataset = dataset.prefetch(prefetch)
    return dataset.with_options(options)
