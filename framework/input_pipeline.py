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
                     start_step: int = 0, steps_per_fetch: int = 1, host_fn=None, example_fn=None,
                     num_parallel_calls=AUTOTUNE, prefetch=AUTOTUNE) -> DatasetFn:
    """Endless stream of per-replica chunks `(array_0[idx], ...)` of `steps_per_fetch` batches each.

    Each element holds the batches of K = `steps_per_fetch` consecutive steps, shaped [K, b, ...]:
    one `next()` feeds K steps, which divides the per-element cost of tf.data (a 2-core CPU
    running a small model was input-bound at K=1). K must divide the epoch length and `start_step`.

    `host_fn(batch, step, replica_id) -> batch`, if given, runs in the tf.data map on the CPU
    (the "augment on the host" alternative to augmenting inside the step).
    `example_fn(rows, index, epoch) -> rows`, if given, transforms the gathered rows knowing each
    example's id and epoch (e.g. `augment.example_ops.alternating_flip`); it runs in the gather.
    `num_parallel_calls` and `prefetch` (0: none) are there for the input benchmark's sweep.
    """
    num_examples = len(arrays[0])
    per_epoch = steps_per_epoch(num_examples, global_batch_size)
    if per_epoch == 0:
        raise ValueError(f"global batch {global_batch_size} is larger than the {num_examples} training "
                         "examples: lower --global_batch_size")
    fetch = steps_per_fetch
    if per_epoch % fetch or start_step % fetch or (host_fn and fetch != 1):
        raise ValueError(f"steps_per_fetch={fetch} must divide the epoch ({per_epoch} steps) and the start "
                         f"step ({start_step}), and be 1 with host augmentation")
    start_epoch, skip = divmod(start_step, per_epoch)

    def epoch_batches(epoch):
        order = epoch_permutation(num_examples, seed, epoch)[: per_epoch * global_batch_size]
        shape = [per_epoch // fetch, fetch, global_batch_size]
        if example_fn is None:
            return tf.data.Dataset.from_tensor_slices(tf.reshape(order, shape))
        return tf.data.Dataset.from_tensor_slices((tf.reshape(order, shape), tf.fill(shape, epoch)))

    def gather(tensors, index):
        """The rows of `index` (or of (index, epoch), transformed by example_fn)."""
        if example_fn is None:
            return tuple(tf.gather(t, index) for t in tensors)
        index, epoch = index
        return tuple(example_fn(tuple(tf.gather(t, index) for t in tensors), index, epoch))

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        tensors = _host_tensors(arrays)
        indices = (tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
                   .flat_map(epoch_batches).skip(skip // fetch))
        if host_fn is None:  # the lean path: nothing but indices, then one gather per batch
            batches = _split_for_replicas(indices, ctx, global_batch_size)
            load = lambda *index: gather(tensors, index if len(index) > 1 else index[0])  # noqa: E731
        else:  # host augmentation needs each batch's step and replica id for its seed
            steps = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
            batches = _split_for_replicas(tf.data.Dataset.zip(indices, steps), ctx, global_batch_size,
                                          tagged=True)
            load = lambda index, step, replica: tuple(  # noqa: E731
                tf.expand_dims(t, 0) for t in host_fn(gather(tensors, tf.nest.map_structure(lambda i: i[0], index)),
                                                      step, replica))
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
        pairs = tf.data.Dataset.from_tensor_slices((index, weight))
        batches = _split_for_replicas(pairs.repeat(), ctx, global_batch_size)

        def load(idx, w):
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
        # A chunk of one step (steps_per_fetch=1), like train_dataset_fn's elements.
        return tf.data.Dataset.from_tensors(tuple(tf.expand_dims(t, 0) for t in batch)).repeat().prefetch(AUTOTUNE)
    return dataset_fn


def _host_tensors(arrays):
    with tf.device("/cpu:0"):
        return [tf.constant(a) for a in arrays]


def _split_for_replicas(batches: tf.data.Dataset, ctx: tf.distribute.InputContext, global_batch_size, *,
                        tagged: bool = False):
    """Global batches of indices -> this pipeline's per-replica slices (of the last, batch axis).

    Elements are index tensors [..., B] (or tuples of them); `tagged` elements are (index, step)
    and come out as (rows, step, replica id).

    The strategy hands consecutive elements of one pipeline to consecutive replicas, so replica r
    of pipeline p gets rows [(p*R + r)*b, (p*R + r + 1)*b) of the global batch: the global batch is
    the same whatever the number of replicas (the 2-replicas-equal-1 invariant rests on this).
    """
    per_replica = ctx.get_per_replica_batch_size(global_batch_size)
    per_pipeline = global_batch_size // ctx.num_input_pipelines
    replicas_here = per_pipeline // per_replica
    first = ctx.input_pipeline_id * per_pipeline
    first_replica = ctx.input_pipeline_id * replicas_here

    def rows(index, split: bool):
        def one(t):
            t = t[..., first:first + per_pipeline]
            if not split:
                return t
            t = tf.reshape(t, tf.concat([tf.shape(t)[:-1], [replicas_here, per_replica]], 0))
            return tf.experimental.numpy.moveaxis(t, -2, 0)  # [replicas, ..., per_replica]
        return tf.nest.map_structure(one, index)

    if replicas_here == 1:  # one replica per pipeline: a map (or nothing), cheaper than flat_map
        if not tagged:
            return batches if ctx.num_input_pipelines == 1 else batches.map(
                lambda *i: rows(i if len(i) > 1 else i[0], False))
        return batches.map(lambda index, step: (rows(index, False), step, tf.constant(first_replica, tf.int32)))
    if not tagged:
        return batches.flat_map(lambda *index: tf.data.Dataset.from_tensor_slices(
            rows(index if len(index) > 1 else index[0], True)))
    return batches.flat_map(lambda index, step: tf.data.Dataset.from_tensor_slices(
        (rows(index, True), tf.fill([replicas_here], step),
         tf.range(replicas_here, dtype=tf.int32) + first_replica)))


def _finish(dataset: tf.data.Dataset, prefetch=AUTOTUNE) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if prefetch == 0:
        options.autotune.enabled = False  # no hidden prefetch either: the "no prefetch" baseline
    else:
        dataset = dataset.prefetch(prefetch)
    return dataset.with_options(options)
