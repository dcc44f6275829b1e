"""The training stream's order, as batches of example indices: the same for every source.

The data order is a pure function of (seed, epoch): each epoch is a stateless permutation of the
example indices. A distributed iterator cannot be checkpointed (tensorflow#56372), so resuming at
step S rebuilds the stream from epoch S // steps_per_epoch and skips the remaining batches, which
only touches indices, never images. Global batches of indices are split per input pipeline and per
replica here (`_split_for_replicas`), so the global batch is the same whatever the replica count.
An evaluation pass is every example once, in a fixed order, padded to whole batches with weight 0.
"""

from typing import Callable

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    return num_examples // global_batch_size


def train_indices(
    num_examples: int, *, global_batch_size: int, seed: int, start_step: int, steps: int
) -> np.ndarray:
    """The example indices of global batches [start_step, start_step + steps) in the training
    stream's order, all input pipelines together (`train_index_batches` for one pipeline): e.g.
    which files a failed read was among."""
    if not steps_per_epoch(num_examples, global_batch_size):
        return np.zeros([0], np.int64)
    batches = train_index_batches(
        tf.distribute.InputContext(),
        num_examples,
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
    )
    return np.concatenate([b.numpy().ravel() for b in batches.take(steps)])


def epoch_permutation(num_examples: int, seed: int, epoch) -> tf.Tensor:
    """The example order of one epoch: the same for the same (seed, epoch), on every machine."""
    keys = tf.random.stateless_uniform(
        [num_examples], seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    )
    return tf.argsort(keys, stable=True)


def check_train_stream(
    num_examples: int, global_batch_size: int, steps_per_fetch: int, start_step: int, host_fn
) -> int:
    """The epoch length in steps, after checking that the batch and the fetch fit it."""
    per_epoch = steps_per_epoch(num_examples, global_batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"global batch {global_batch_size} is larger than the {num_examples} training "
            "examples: lower --global_batch_size"
        )
    fetch = steps_per_fetch
    if per_epoch % fetch or start_step % fetch or (host_fn and fetch != 1):
        raise ValueError(
            f"steps_per_fetch={fetch} must divide the epoch ({per_epoch} steps) and the start "
            f"step ({start_step}), and be 1 with host augmentation"
        )
    return per_epoch


def train_index_batches(
    ctx: tf.distribute.InputContext,
    num_examples: int,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    steps_per_fetch: int = 1,
    host_fn=None,
    example_fn=None,
    stop_step: int | None = None,
    **unused,
) -> tf.data.Dataset:
    """This input pipeline's per-replica index chunks, from `start_step` on: elements `index` [K, b]
    (with example_fn: `(index, epoch)`), or with host_fn `(index, step, replica_id)` (K = 1).
    With `stop_step`, the same elements up to that step, made from the chunk numbers (one element
    each) instead of per epoch: a source the tf.data service splits (distributed_epoch)."""
    per_epoch = steps_per_epoch(num_examples, global_batch_size)
    fetch = steps_per_fetch
    start_epoch, skip = divmod(start_step, per_epoch)

    def epoch_batches(epoch):
        order = epoch_permutation(num_examples, seed, epoch)[: per_epoch * global_batch_size]
        shape = [per_epoch // fetch, fetch, global_batch_size]
        if example_fn is None:
            return tf.data.Dataset.from_tensor_slices(tf.reshape(order, shape))
        return tf.data.Dataset.from_tensor_slices((tf.reshape(order, shape), tf.fill(shape, epoch)))

    if stop_step is not None:
        return _split_for_replicas(
            _chunk_indices(
                num_examples,
                global_batch_size,
                seed,
                fetch,
                start_step,
                stop_step,
                per_epoch,
                example_fn is not None,
                host_fn is not None,
            ),
            ctx,
            global_batch_size,
            tagged=host_fn is not None,
        )
    indices = (
        tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
        .flat_map(epoch_batches)
        .skip(skip // fetch)
    )
    if host_fn is None:
        return _split_for_replicas(indices, ctx, global_batch_size)
    steps = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    return _split_for_replicas(
        tf.data.Dataset.zip(indices, steps), ctx, global_batch_size, tagged=True
    )


def _chunk_indices(
    num_examples,
    global_batch_size,
    seed,
    fetch,
    start_step,
    stop_step,
    per_epoch,
    with_epoch,
    with_step,
) -> tf.data.Dataset:
    """train_index_batches' global elements for steps [start_step, stop_step), one per chunk of
    `fetch` steps, computed from the chunk number alone (one epoch permutation per chunk: the price
    of a splittable source)."""

    def chunk(number):
        first = number * fetch
        epoch, within = first // per_epoch, first % per_epoch
        order = epoch_permutation(num_examples, seed, epoch)
        index = tf.reshape(
            order[within * global_batch_size : (within + fetch) * global_batch_size],
            [fetch, global_batch_size],
        )
        element = (index, tf.fill(tf.shape(index), epoch)) if with_epoch else index
        return (element, first) if with_step else element

    return tf.data.Dataset.range(start_step // fetch, -(-stop_step // fetch)).map(chunk)


def _eval_indices(num_examples: int, global_batch_size: int):
    """(index, weight) [num_batches, B] of one evaluation pass: padding rows read example 0 with
    weight 0."""
    num_batches = -(-num_examples // global_batch_size)
    index = np.arange(num_batches * global_batch_size)
    weight = (index < num_examples).astype(np.float32)
    index = np.where(weight > 0, index, 0).reshape(num_batches, global_batch_size)
    return index, weight.reshape(num_batches, global_batch_size), num_batches


def _split_for_replicas(
    batches: tf.data.Dataset,
    ctx: tf.distribute.InputContext,
    global_batch_size,
    *,
    tagged: bool = False,
):
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
            t = t[..., first : first + per_pipeline]
            if not split:
                return t
            t = tf.reshape(t, tf.concat([tf.shape(t)[:-1], [replicas_here, per_replica]], 0))
            return tf.experimental.numpy.moveaxis(t, -2, 0)  # [replicas, ..., per_replica]

        return tf.nest.map_structure(one, index)

    if replicas_here == 1:  # one replica per pipeline: a map (or nothing), cheaper than flat_map
        if not tagged:
            return (
                batches
                if ctx.num_input_pipelines == 1
                else batches.map(lambda *i: rows(i if len(i) > 1 else i[0], False))
            )
        return batches.map(
            lambda index, step: (rows(index, False), step, tf.constant(first_replica, tf.int32))
        )
    if not tagged:
        return batches.flat_map(
            lambda *index: tf.data.Dataset.from_tensor_slices(
                rows(index if len(index) > 1 else index[0], True)
            )
        )
    return batches.flat_map(
        lambda index, step: tf.data.Dataset.from_tensor_slices(
            (
                rows(index, True),
                tf.fill([replicas_here], step),
                tf.range(replicas_here, dtype=tf.int32) + first_replica,
            )
        )
    )


def _finish(dataset: tf.data.Dataset, prefetch=AUTOTUNE) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if prefetch == 0:
        options.autotune.enabled = False  # no hidden prefetch either: the "no prefetch" baseline
    else:
        dataset = dataset.prefetch(prefetch)
    return dataset.with_options(options)
