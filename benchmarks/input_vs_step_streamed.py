"""The streamed cases of `python -m benchmarks.input_vs_step --case=cifar_jpeg|folder|memory` (its
docstring says what each measures). The sources are the engine's own streamed sources
(input_pipeline.IndexedSource): CIFAR-10's JPEG bytes held in memory and decoded per step, and a
generated folder of CIFAR images upscaled to --folder_size JPEGs (framework.data.image_folder).
"""

import os
import resource
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import logging

import framework
from benchmarks.report import bar_plot, machine_setup, write_report
from framework import data_service, input_pipeline
from framework.controller import Data
from framework.data import image_folder, streaming

AUTOTUNE = tf.data.AUTOTUNE
CIFAR_JPEG = "cifar10_jpeg.npz"


class JpegBytes(input_pipeline.IndexedSource):
    """Example i = (decode_jpeg(blobs[i]), labels[i]): JPEG files held in memory, decoded while
    training."""

    def __init__(self, blobs, labels, image_shape):
        self.blobs, self.labels = list(blobs), np.asarray(labels, np.int32)
        self.num_examples, self.image_shape = len(self.blobs), tuple(image_shape)
        self.example_spec = (tf.TensorSpec(self.image_shape, tf.uint8), tf.TensorSpec([], tf.int32))
        with tf.device("/cpu:0"):
            self._blobs, self._labels = tf.constant(self.blobs), tf.constant(self.labels)

    def load_example(self, index):
        image = decode(tf.gather(self._blobs, index), self.image_shape)
        return (image, tf.gather(self._labels, index)), tf.constant(True)


def decode(blob, image_shape):
    """decode_jpeg, then a resize only when the file's size is not `image_shape` (what streaming
    does)."""
    image = tf.io.decode_jpeg(blob, channels=image_shape[-1])
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], image_shape[:2]))
    image = tf.cond(
        same,
        lambda: image,
        lambda: tf.cast(
            tf.clip_by_value(
                tf.round(tf.image.resize(image, image_shape[:2], antialias=True)), 0, 255
            ),
            tf.uint8,
        ),
    )
    return tf.ensure_shape(image, image_shape)


def cifar_jpegs(data_dir: str, count: int, split: str = "train"):
    """The first `count` JPEG files of CIFAR-10's `split` (bytes) and their labels."""
    with np.load(os.path.join(data_dir, CIFAR_JPEG), allow_pickle=False) as f:
        blob, offsets, labels = f[f"{split}_jpeg"], f[f"{split}_offsets"], f[f"y_{split}"]
    count = min(count, len(labels))
    return [blob[offsets[i] : offsets[i + 1]].tobytes() for i in range(count)], labels[
        :count
    ].astype(np.int32)


def make_folder(root: str, data_dir: str, count: int, size: int, test_count: int) -> str:
    """root/train/<class>/*.jpg (`count` images) and root/test/<class>/*.jpg: CIFAR-10 upscaled to
    size x size JPEGs (quality 90), made in a parallel tf.data map. Returns root."""
    for split, n in (("train", count), ("test", test_count)):
        blobs, labels = cifar_jpegs(data_dir, 50000 if split == "train" else n, split)
        source = tf.constant(blobs)

        def upscale(i):
            image = tf.io.decode_jpeg(source[i % len(blobs)], channels=3)
            image = tf.cast(tf.round(tf.image.resize(image, (size, size))), tf.uint8)
            return tf.io.encode_jpeg(image, quality=90)

        for c in range(10):
            os.makedirs(os.path.join(root, split, f"class_{c}"), exist_ok=True)
        files = tf.data.Dataset.range(n).map(upscale, num_parallel_calls=AUTOTUNE).prefetch(64)
        for i, jpeg in enumerate(files.as_numpy_iterator()):
            with open(
                os.path.join(root, split, f"class_{labels[i % len(labels)]}", f"{i:07d}.jpg"), "wb"
            ) as f:
                f.write(jpeg)
    return root


def raw_decode_rate(blobs, image_shape, batch: int, batches: int = 0) -> float:
    """Images/s of decode (+ resize) alone over JPEG bytes already in memory, all cores, no
    training: over `batches` batches after two (0: one pass over `blobs`)."""
    return _decode_rate(
        tf.data.Dataset.from_tensor_slices(tf.constant(blobs)),
        lambda b: decode(b, image_shape),
        batch,
        batches,
    )


def read_decode_rate(files, image_shape, batch: int, batches: int = 0) -> float:
    """Images/s of the same decode over the files read from disk, with none of the engine's checks:
    what reading a file costs on this machine, the ceiling of any pipeline that reads them."""
    return _decode_rate(
        tf.data.Dataset.from_tensor_slices(tf.constant(files)),
        lambda path: decode(tf.io.read_file(path), image_shape),
        batch,
        batches,
    )


def _decode_rate(inputs, decode_fn, batch: int, batches: int) -> float:
    if batches:
        inputs = inputs.repeat()
    dataset = inputs.map(decode_fn, num_parallel_calls=AUTOTUNE).batch(batch).prefetch(AUTOTUNE)
    iterator = iter(dataset)
    next(iterator)  # warm-up: the first batches build the threads (as input_alone's)
    if batches:
        next(iterator)
    start, count = time.perf_counter(), 0
    for images in iterator if not batches else (next(iterator) for _ in range(batches)):
        count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def limit_rates(source, blobs, image_shape, config, chunks: int, repeats: int) -> dict:
    """{'raw', 'read' (image folders only), 'delivered'}: medians of `repeats` alternations of the
    raw decode rate, the files read and decoded with no checks, and the engine's delivered rate,
    each timing the same `chunks` batches after two; and {'delivered/raw', 'read/raw',
    'delivered/read'}: the medians of the ratios within each alternation. Alternated, and ratios
    paired, because this machine's speed drifts by 20% over a minute: a ratio of two rates taken
    apart is mostly noise."""
    batch, files = config.global_batch_size, getattr(source, "files", None)
    measured = {"raw": [], "read": [], "delivered": []}
    for _ in range(repeats):
        measured["raw"].append(raw_decode_rate(blobs, image_shape, batch, chunks))
        if files:
            measured["read"].append(read_decode_rate(files, image_shape, batch, chunks))
        measured["delivered"].append(input_alone(source, config, chunks))
    logging.info(
        "rates (images/s, %d alternations): %s",
        repeats,
        {k: [round(x) for x in v] for k, v in measured.items() if v},
    )
    rates = {k: float(np.median(v)) for k, v in measured.items() if v}
    for top, bottom in (("delivered", "raw"), ("read", "raw"), ("delivered", "read")):
        if measured[top] and measured[bottom]:
            rates[f"{top}/{bottom}"] = float(np.median(np.divide(measured[top], measured[bottom])))
    return rates


def input_alone(source, config, chunks: int, **pipeline) -> float:
    """Examples/s the engine's training stream delivers, no model (what the step would receive)."""
    fn = (
        data_service.train_dataset_fn(
            source,
            config.data_service,
            global_batch_size=config.global_batch_size,
            seed=config.seed,
            stop_step=chunks + 2,
            **pipeline,
        )
        if config.data_service
        else input_pipeline.train_dataset_fn(
            source, global_batch_size=config.global_batch_size, seed=config.seed, **pipeline
        )
    )
    iterator = iter(fn(tf.distribute.InputContext()))
    next(iterator)
    next(iterator)
    start = time.perf_counter()
    for _ in range(chunks):
        batch = next(iterator)
    _ = tf.nest.flatten(batch)[0].numpy()
    return chunks * config.global_batch_size / (time.perf_counter() - start)


def trained(data, config, build, steps: int, hooks=()) -> dict:
    """Examples/s and input-wait fraction of the real train loop over `steps` steps after a warm-up
    loop."""
    loops = []
    config = config.replace(train_steps=2 * steps, steps_per_loop=steps)
    result = framework.train(config, data, hooks=[loops.append, *hooks], **build(data))
    timed = loops[1:]  # the first loop traces and compiles
    seconds = sum(i.seconds for i in timed)
    wait = sum(i.input_seconds for i in timed) / seconds
    return {
        "examples_per_sec": sum(i.steps for i in timed) * config.global_batch_size / seconds,
        "input_wait_fraction": wait,
        "engine_verdict": result["bound"],
        "result": result,
    }


def builder(model: str, image_shape, augment_name: str, *, on_host: bool, seed: int = 0):
    """framework.train's model_fn / optimizer_fn / task for a 10-class model on `image_shape`."""
    import augment
    from trainers import evaluation, models, optimizers

    policy = (
        augment.get_policy(augment_name, num_classes=10, image_shape=image_shape)
        if augment_name != "none"
        else None
    )

    def model_fn():
        if model == "tiny":
            return tiny_model(image_shape, seed)
        return models.build_model(model, input_shape=image_shape, num_classes=10, seed=seed)

    def build(data):
        return dict(
            model_fn=model_fn,
            optimizer_fn=lambda lr: optimizers.build_optimizer("sgd", lr, momentum=0.9),
            task=framework.ClassificationTask(10, augment=None if on_host else policy),
        )

    host_fn = evaluation.host_augment_fn(policy, seed) if (on_host and policy is not None) else None
    return build, host_fn


def tiny_model(image_shape, seed: int):
    """A stand-in for a fast accelerator's step: every k-th pixel (16x16), one hidden layer. Its
    step costs little at any image size, so what the benchmark sees is the input pipeline's
    speed."""
    import keras

    init = keras.initializers.GlorotUniform(seed)
    return keras.Sequential(
        [
            keras.Input(image_shape),
            keras.layers.Resizing(16, 16, interpolation="nearest"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", kernel_initializer=init),
            keras.layers.Dense(10, dtype="float32", kernel_initializer=init),
        ]
    )


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(FLAGS):
    data_dir = os.environ.get("DATA_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "datasets"
    )
    name = (
        f"folder_{FLAGS.folder_size}to{FLAGS.folder_image_size}"
        if FLAGS.case == "folder" and FLAGS.folder_image_size
        else FLAGS.case
    )
    out = FLAGS.out or os.path.join(os.path.dirname(__file__), "reports", "input_vs_step", name)
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="tfloops_input_")
    try:
        if FLAGS.case == "memory":
            return memory_case(FLAGS, data_dir, work, out)
        return decode_case(FLAGS, data_dir, work, out)
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def _sources(FLAGS, data_dir, work):
    """(train source, the same files' bytes in memory, image shape, what it is)."""
    if FLAGS.case == "cifar_jpeg":
        blobs, labels = cifar_jpegs(data_dir, FLAGS.examples)
        return (
            JpegBytes(blobs, labels, (32, 32, 3)),
            blobs,
            (32, 32, 3),
            f"CIFAR-10: {len(blobs)} JPEG files (32x32) held in memory, decoded per step",
        )
    root = make_folder(
        os.path.join(work, "folder"), data_dir, FLAGS.examples, FLAGS.folder_size, 100
    )
    folder = image_folder.list_image_folder(root, image_size=FLAGS.folder_image_size or None)
    train = folder.splits["train"]
    blobs = [open(f, "rb").read() for f in train.files]
    size = folder.image_shape[0]
    return (
        train,
        blobs,
        folder.image_shape,
        (
            f"an image folder of {train.num_examples} JPEGs of "
            f"{FLAGS.folder_size}x{FLAGS.folder_size} (CIFAR-10 upscaled), "
            "read and decoded per step"
            + (f", resized to {size}x{size}" if size != FLAGS.folder_size else "")
        ),
    )


def decode_case(FLAGS, data_dir, work, out):
    smoke, batch = FLAGS.smoke, FLAGS.stream_batch
    steps = 2 if smoke else FLAGS.steps
    source, blobs, image_shape, what = _sources(FLAGS, data_dir, work)
    evals = {"test": tuple(source.head(batch))}  # only training is timed: a small, quick evaluation
    config = framework.TrainConfig(
        global_batch_size=batch, learning_rate=0.01, epochs=1, export=False
    )
    build, _ = builder(FLAGS.stream_model, image_shape, "none", on_host=False)
    logging.info("case %s: %s; model %s, batch %d", FLAGS.case, what, FLAGS.stream_model, batch)

    raw = raw_decode_rate(blobs, image_shape, batch)
    if (
        not smoke
    ):  # 12 steps of 128 CIFAR JPEGs are 0.1 s: a prefetch buffer's worth (data service: 62k ex/s)
        steps = max(steps, min(400, int(raw * FLAGS.stream_seconds / batch)))
    logging.info("raw decode %.0f images/s: %d timed steps per measurement", raw, steps)
    rates = limit_rates(
        source, blobs, image_shape, config, 2 * steps, 1 if smoke else FLAGS.limit_repeats
    )
    raw, delivered, read = rates["raw"], rates["delivered"], rates.get("read")
    ratio = rates["delivered/raw"]
    fake = tuple(
        np.zeros((steps * batch, *spec.shape), spec.dtype.as_numpy_dtype)
        for spec in source.example_spec
    )
    step_alone = trained(Data(train=fake, evals=evals, synthetic=True), config, build, steps)[
        "examples_per_sec"
    ]
    both = trained(Data(train=source, evals=evals), config, build, steps)
    rows = [_row("default: AUTOTUNE map, prefetch, no augmentation", delivered, both)]

    def variant(name, *, data=None, cfg=config, build_fn=build, **pipeline):
        data = data or Data(train=source, evals=evals, pipeline=pipeline)
        host_fn = data.host_fn
        found = trained(data, cfg, build_fn, steps)
        rows.append(
            _row(
                name,
                input_alone(data.train, cfg, 2 * steps, host_fn=host_fn, **data.pipeline),
                found,
            )
        )
        logging.info("%s: %s", name, rows[-1])

    if FLAGS.sweep:
        if (
            getattr(source, "checked", True) is False
        ):  # JPEGs failing on a corrupt file: what skipping costs
            checked = image_folder.StreamedImages(
                source.files,
                source.labels,
                image_shape,
                on_corrupt="skip",
                max_image_pixels=source.max_image_pixels,
                skipped=streaming.SkippedFiles(),
            )
            variant(
                "--on_corrupt=skip: each file checked before its decode",
                data=Data(train=checked, evals=evals),
            )
        variant("map num_parallel_calls=1", num_parallel_calls=1)
        variant("no prefetch", prefetch=0)
        decoded = source.num_examples * int(np.prod(image_shape))
        if decoded < streaming.IN_MEMORY_LIMIT_BYTES:  # the cache of decoded images, where they fit
            x, y = _decode_all(source)
            variant(
                f"decoded once, in memory ({decoded / 1e6:,.0f} MB)",
                data=Data(train=(x, y), evals=evals),
            )
            del x, y
        if FLAGS.stream_augment != "none":
            device_build, _ = builder(
                FLAGS.stream_model, image_shape, FLAGS.stream_augment, on_host=False
            )
            variant(
                f"augment {FLAGS.stream_augment} on device (in the step)", build_fn=device_build
            )
            host_build, host_fn = builder(
                FLAGS.stream_model, image_shape, FLAGS.stream_augment, on_host=True
            )
            variant(
                f"augment {FLAGS.stream_augment} on host (tf.data)",
                data=Data(train=source, evals=evals, host_fn=host_fn),
                build_fn=host_build,
            )
        for workers in (1, 2):
            address, servers = data_service.start_servers(workers)
            try:
                variant(
                    f"tf.data service, {workers} data worker{'s' * (workers > 1)} (this machine)",
                    cfg=config.replace(data_service=address),
                )
            finally:
                for server in reversed(servers):
                    server._stop()

    bound = "input" if delivered < step_alone else "step"
    summary = {
        "case": FLAGS.case,
        "source": what,
        "model": FLAGS.stream_model,
        "global_batch_size": batch,
        "raw_decode_examples_per_sec": raw,
        "input_alone_examples_per_sec": delivered,
        "delivered_to_raw_ratio": ratio,
        "step_alone_examples_per_sec": step_alone,
        **(
            {
                "read_decode_examples_per_sec": read,
                "delivered_to_read_decode_ratio": rates["delivered/read"],
                "read_decode_to_raw_ratio": rates["read/raw"],
            }
            if read
            else {}
        ),
        "combined_examples_per_sec": both["examples_per_sec"],
        "bound": bound,
        "efficiency": both["examples_per_sec"] / min(delivered, step_alone),
        "combined_input_wait_fraction": both["input_wait_fraction"],
        "engine_verdict": both["engine_verdict"],
    }
    if smoke:
        summary["smoke"] = True
    command = (
        f"python -m benchmarks.input_vs_step --case={FLAGS.case} --examples={FLAGS.examples}"
        + (f" --folder_size={FLAGS.folder_size}" if FLAGS.case == "folder" else "")
        + (
            f" --folder_image_size={FLAGS.folder_image_size}"
            if FLAGS.case == "folder" and FLAGS.folder_image_size
            else ""
        )
        + (" --smoke" if smoke else "")
    )
    write_report(
        out,
        title=f"Input pipeline versus step, streamed: {FLAGS.case}",
        summary=summary,
        rows=rows,
        columns=["setting", "input alone ex/s", "combined ex/s", "input wait", "engine verdict"],
        setup={
            **machine_setup(),
            "command": command,
            "timed steps": steps,
            "augment": FLAGS.stream_augment,
            "raw decode": "tf.io.decode_jpeg (+ resize when the size "
            "differs) over the bytes in memory, tf.data map with AUTOTUNE, batch, no training",
            "read + decode": "the same decode over the files read with tf.io.read_file, none of "
            "the engine's checks (image folders)",
            "corrupt files": "--on_corrupt=fail (the default): JPEGs are decoded unchecked, a "
            "decode error names its file afterwards (framework/data/streaming.py)",
            "rates": f"raw, read + decode and input alone: medians of {FLAGS.limit_repeats} "
            "alternations; the ratios: medians of the ratios within each alternation"
            if not smoke
            else "one measurement each",
            "step alone": "synthetic batches: one random batch, repeated",
        },
        notes=(
            "SMOKE RUN: a few steps on a few examples, the figures mean nothing.\n\n"
            if smoke
            else ""
        )
        + f"Source: {what}. The pipeline delivers {delivered:,.0f} ex/s, {ratio:.0%} of the "
        f"machine's raw decode rate ({raw:,.0f} images/s)"
        + (
            "; the same files read and decoded with none of the engine's checks run at "
            f"{read:,.0f} images/s ({rates['read/raw']:.0%} of raw: what reading the files "
            f"leaves), and the engine delivers {rates['delivered/read']:.0%} of that"
            if read
            else ""
        )
        + f". Verdict: {bound}-bound (input alone versus "
        f"step alone); the engine's per-loop input wait says {both['engine_verdict']} "
        f"({both['input_wait_fraction']:.0%}).",
        plots={
            "breakdown.png": bar_plot(
                ["raw decode", "input alone", "step alone", "combined"],
                [raw, delivered, step_alone, both["examples_per_sec"]],
                ylabel="examples/s",
                title=f"{FLAGS.case}: bound by {bound}",
            ),
            "sweep.png": bar_plot(
                [r["setting"][:32] for r in rows],
                [r["combined ex/s"] for r in rows],
                ylabel="combined examples/s",
                title="fixes",
            ),
        },
    )
    print(
        f"{FLAGS.case}: raw decode {raw:,.0f}/s | input alone {delivered:,.0f} ex/s "
        f"({ratio:.0%} of raw) | step alone {step_alone:,.0f} ex/s | combined "
        f"{both['examples_per_sec']:,.0f} ex/s | {bound}-bound | engine: "
        f"{both['engine_verdict']} | report: {out}"
    )


def _row(name, delivered, found):
    return {
        "setting": name,
        "input alone ex/s": delivered,
        "combined ex/s": found["examples_per_sec"],
        "input wait": found["input_wait_fraction"],
        "engine verdict": found["engine_verdict"],
    }


def _decode_all(source):
    parts = source.head(source.num_examples)
    return parts[0], parts[1]


def memory_case(FLAGS, data_dir, work, out):
    """RSS while streaming a folder of about --memory_gb decoded GB for --memory_epochs epochs."""
    size, batch = FLAGS.folder_size, FLAGS.stream_batch
    count = max(2 * batch, int(FLAGS.memory_gb * 1e9 / (size * size * 3)))
    start = time.time()
    root = make_folder(os.path.join(work, "folder"), data_dir, count, size, 100)
    made_minutes = (time.time() - start) / 60
    folder = image_folder.list_image_folder(root)
    train = folder.splits["train"]
    decoded_gb = train.num_examples * int(np.prod(folder.image_shape)) / 1e9
    evals = {"test": tuple(folder.splits["test"].head(100))}
    build, _ = builder(FLAGS.stream_model, folder.image_shape, "none", on_host=False)
    samples = []  # (epoch, step, rss MB) at each loop end

    def sample(info):
        samples.append((info.epoch, info.step, rss_mb()))

    per_epoch = train.num_examples // batch
    config = framework.TrainConfig(
        global_batch_size=batch,
        learning_rate=0.01,
        epochs=FLAGS.memory_epochs,
        steps_per_loop=max(1, per_epoch // 8),
        export=False,
    )
    rss_before = rss_mb()
    start = time.time()
    result = framework.train(config, Data(train=train, evals=evals), hooks=[sample], **build(None))
    seconds = time.time() - start
    epoch_end = {}
    for epoch, step, mb in samples:
        if step % per_epoch == 0:
            epoch_end[step // per_epoch] = mb
    ends = [epoch_end[e] for e in sorted(epoch_end)]
    growth = ends[-1] - ends[0] if len(ends) > 1 else 0.0
    summary = {
        "case": "memory",
        "images": train.num_examples,
        "image_size": size,
        "decoded_gb": decoded_gb,
        "epochs": FLAGS.memory_epochs,
        "rss_before_training_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "rss_at_epoch_ends_mb": ends,
        "rss_growth_first_to_last_epoch_mb": growth,
        "flat": abs(growth) < max(50.0, 0.05 * ends[0]) if ends else False,
        "examples_per_sec": result["examples_per_sec"],
        "bound": result["bound"],
        "train_seconds": seconds,
        "folder_minutes": made_minutes,
    }
    if FLAGS.smoke:
        summary["smoke"] = True
    rows = [{"epoch": e, "rss MB at its end": epoch_end[e]} for e in sorted(epoch_end)]
    command = (
        f"python -m benchmarks.input_vs_step --case=memory --memory_gb={FLAGS.memory_gb} "
        f"--memory_epochs={FLAGS.memory_epochs} --folder_size={size}"
        + (" --smoke" if FLAGS.smoke else "")
    )
    write_report(
        out,
        title="Memory while streaming an image folder larger than the pixels one would keep in RAM",
        summary=summary,
        rows=rows,
        columns=["epoch", "rss MB at its end"],
        setup={
            **machine_setup(),
            "command": command,
            "model": FLAGS.stream_model,
            "batch": batch,
            "rss": "/proc/self/statm resident pages at each loop end; peak: getrusage ru_maxrss",
        },
        notes=("SMOKE RUN: a small folder, the figures mean nothing.\n\n" if FLAGS.smoke else "")
        + f"{train.num_examples} JPEGs of {size}x{size}, {decoded_gb:.2f} GB decoded, streamed "
        f"for {FLAGS.memory_epochs} epochs: peak RSS {summary['peak_rss_mb']:,.0f} MB, RSS "
        f"at the epoch ends {', '.join(f'{m:,.0f}' for m in ends)} MB "
        f"({'flat' if summary['flat'] else 'not flat'}).",
        plots={
            "memory.png": bar_plot(
                [f"epoch {e}" for e in sorted(epoch_end)],
                ends or [0],
                ylabel="RSS MB",
                title=f"{decoded_gb:.2f} GB folder, streamed",
            )
        },
    )
    print(
        f"memory: {train.num_examples} images ({decoded_gb:.2f} GB decoded), "
        f"peak RSS {summary['peak_rss_mb']:,.0f} MB, "
        f"epoch ends {', '.join(f'{m:,.0f}' for m in ends)} MB | report: {out}"
    )
