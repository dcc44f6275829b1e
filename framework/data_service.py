"""tf.data service: the training input made by separate data workers, for runs the trainer's CPU
cannot feed.

    python -m framework.launch --data_workers=2 -- python -m trainers.cifar ...  # all on this machine
    python -m framework.data_service --port=5050 --workers=0                     # a dispatcher, on host A
    python -m framework.data_service --dispatcher=A:5050 --workers=4             # 4 data workers, on host B
    python -m trainers.cifar --data_service=grpc://A:5050 ...                     # the trainer(s)

With `--data_service=grpc://HOST:PORT` (TrainConfig.data_service) the training stream is the one the
trainer would build itself (framework/input_pipeline.py: index batches of f(seed, epoch), gather or
read and decode, example_fn, host augmentation), but it runs on the dispatcher's data workers and
the trainer only receives the finished uint8 batches (tf.data.experimental.service.distribute). The
evaluation input stays in the trainer.

What a user gets, processing_mode "distributed_epoch" (arrays in memory and indexed streamed
sources, e.g. image folders: their stream is built from chunk numbers, one chunk = steps_per_fetch
steps, which the dispatcher hands out one at a time to whichever data worker asks):
  - each batch holds the examples it holds without the service: batch s is a function of (seed,
    epoch, s), and every step from the start step to the last is made exactly once per input
    pipeline, so each example is seen once per epoch;
  - the ORDER in which the batches reach the trainer is the order in which the data workers finish
    them, so it is NOT a function of (seed, epoch): two runs train on the same batches in a slightly
    different order and are not bit-identical; near an epoch end a few batches of the next epoch
    may come before the last ones of this epoch (at most the workers' buffers);
  - a resume at step S starts the stream at step S: the right epoch and batch, the exact set of
    batches still to train on, in a worker-dependent order;
  - a data worker that dies loses the chunks it held (the service's at-most-once delivery): the
    stream then ends before the last step and the run fails (resume it), it never trains twice on a
    batch.
"parallel_epochs" (a streamed source that cannot be split by index, e.g. TFRecord shards read by
interleave): every data worker makes the whole stream, so with W data workers each example comes W
times per epoch (in W copies of the same order); use one data worker for such a source. Its resume
is the source's own.

Host-side Python does not travel to the data workers: a pipeline that runs tf.py_function (e.g. the
skipped-file count of --on_corrupt=skip) is refused with --data_service.
"""  # noqa: E501

import sys

from absl import flags

from framework.config import ConfigError, parse_address
from framework.tf_startup import import_tensorflow

READY = "data service ready:"  # the line `python -m framework.data_service` prints once it serves


def can_split(source) -> bool:
    """True when the service can split `source`'s stream by chunk numbers (distributed_epoch):
    arrays, and streamed sources whose examples are indexed (input_pipeline.IndexedSource)."""
    from framework import input_pipeline  # lazy: keeps TF out of --help

    return not isinstance(source, input_pipeline.StreamedSource) or isinstance(
        source, input_pipeline.IndexedSource
    )


def train_dataset_fn(
    source,
    address: str,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    stop_step: int,
    steps_per_fetch: int = 1,
    host_fn=None,
    example_fn=None,
    **pipeline,
):
    """The stream of `input_pipeline.train_dataset_fn(source, ...)` for steps [start_step,
    stop_step), made by the data workers of the dispatcher at `address` (see the module docstring
    for its order)."""
    import tensorflow as tf  # lazy: keeps TF out of --help

    from framework import input_pipeline  # lazy: keeps TF out of --help

    parse_address(address)
    if getattr(source, "skips_unreadable", False):
        raise ConfigError(
            "--data_service with --on_corrupt=skip: counting skipped files runs Python inside "
            "the input pipeline, which data workers cannot run; use --on_corrupt=fail, or no "
            "--data_service"
        )
    splittable = can_split(source)
    local_fn = input_pipeline.train_dataset_fn(
        source,
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
        steps_per_fetch=steps_per_fetch,
        host_fn=host_fn,
        example_fn=example_fn,
        **({"stop_step": stop_step} if splittable else {}),
        **pipeline,
    )

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        # Each input pipeline registers its own stream (its slice of every global batch) as its own
        # job: the dispatcher splits that job's chunks over all data workers.
        return distribute(local_fn(ctx), address, splittable=splittable)

    return dataset_fn


def distribute(dataset, address: str, *, splittable: bool):
    """`dataset`, made by the service's data workers: distributed_epoch when its source can be
    split."""
    import tensorflow as tf  # lazy: keeps TF out of --help

    mode = "distributed_epoch" if splittable else "parallel_epochs"
    # No compression: uint8 image batches barely shrink, and on one machine it only costs CPU.
    return dataset.apply(tf.data.experimental.service.distribute(mode, address, compression=None))


def start_servers(num_workers: int, *, port: int = 0, dispatcher: str = ""):
    """A dispatcher on `port` (0: any free one; none when `dispatcher` names one elsewhere) and
    `num_workers` data workers of it, in this process. Returns (address, servers); keep the servers
    referenced: they stop when collected."""
    import tensorflow as tf  # lazy: keeps TF out of --help

    service = tf.data.experimental.service
    servers = []
    if dispatcher:
        address = dispatcher if dispatcher.startswith("grpc://") else f"grpc://{dispatcher}"
    else:
        servers.append(service.DispatchServer(service.DispatcherConfig(port=port)))
        address = servers[0].target
    parse_address(address)
    for _ in range(num_workers):
        servers.append(
            service.WorkerServer(service.WorkerConfig(dispatcher_address=address[len("grpc://") :]))
        )
    return address, servers


def main(argv):
    args = flags.FLAGS
    import_tensorflow(verbose=False)
    try:
        address, servers = start_servers(args.workers, port=args.port, dispatcher=args.dispatcher)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{READY} {address} ({args.workers} data workers)", flush=True)
    servers[0].join()


def _define_flags():
    flags.DEFINE_integer("port", 0, "Dispatcher port (0: any free port; the address is printed).")
    flags.DEFINE_integer("workers", 1, "Data workers to start in this process.")
    flags.DEFINE_string(
        "dispatcher", "", "HOST:PORT of a dispatcher elsewhere: start only data workers for it."
    )


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
