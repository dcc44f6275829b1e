"""tf.data pipelines from in-memory arrays, built per input pipeline for a tf.distribute strategy.

The data order is a pure function of (seed, epoch): each epoch is a stateless permutation of the
example indices. A distributed iterator cannot be checkpointed (tensorflow#56372), so resuming at
step S rebuilds the stream from epoch S // steps_per_epoch and skips the remaining batches, which
only touches indices, never images.

Indices are batched first and images gathered a whole batch at a time (one `tf.gather` per batch
instead of one map call per example), which keeps a 2-core CPU ahead of a small model.
Static shapes everywhere (`drop_remainder` semantics) so the same step compiles for TPU.

A source is either arrays (held in memory, gathered per batch) or a `StreamedSource`, which builds
its own tf.data pipeline (read from files while training, bounded memory): `IndexedSource` streams
any indexable list of examples (an image folder's files) through the same index stream, so its order
and exact resume are the arrays' (`framework/data/streaming.py` chooses between the two).
"""

import abc
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    return num_examples // global_batch_size


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


def _eval_indices(num_examples: int, global_batch_size: int):
    """(index, weight) [num_batches, B] of one evaluation pass: padding rows read example 0 with
    weight 0."""
    num_batches = -(-num_examples // global_batch_size)
    index = np.arange(num_batches * global_batch_size)
    weight = (index < num_examples).astype(np.float32)
    index = np.where(weight > 0, index, 0).reshape(num_batches, global_batch_size)
    return index, weight.reshape(num_batches, global_batch_size), num_batches


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
