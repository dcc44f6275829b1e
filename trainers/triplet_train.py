"""The triplet trainer's run (trainers/triplet.py declares the trainer and its options): a triplet
batch's meaning (TripletTask), the triplets (class triplets of an image dataset, or the FEC CSV's),
epochs of N steps (StepsEpoch), and `train`, which runs them through the engine like any other task.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

import framework
from framework import ConfigError, input_pipeline
from framework.controller import Data
from framework.data import datasets, streaming
from framework.data.image_folder import MAX_IMAGE_PIXELS
from trainers import fec_data, models, optimizers, plots
from trainers import triplet_loss as triplet_loss_lib
from trainers.experiment import run_reading_files
from trainers.triplet_config import TripletConfig, check_run_dir


class TripletTask:
    """Batches of (uint8 triplets [B, 3, H, W, C], odd-one-out vote shares [B, 3]) -> embeddings ->
    loss."""

    metric_names = ("loss", "triplet_accuracy")
    uses_seed = False

    def __init__(self, delta: float, loss: str = "vote_weighted"):
        self.delta, self.loss_name = delta, loss

    def make_metrics(self):
        return {name: keras.metrics.Mean(name=name) for name in self.metric_names}

    def prepare(self, batch, *, seed, training):
        triplets, shares = batch[0], batch[1]
        return tf.cast(triplets, tf.float32) / 255.0, shares

    def forward(self, model, triplets, *, training):
        """One model call on the 3B images; returns embeddings [3, B, D] (faces 0, 1, 2)."""
        shape = tf.shape(triplets)
        images = tf.reshape(
            tf.transpose(triplets, [1, 0, 2, 3, 4]), tf.concat([[3 * shape[0]], shape[2:]], 0)
        )
        embeddings = tf.cast(model(images, training=training), tf.float32)
        return tf.reshape(embeddings, [3, shape[0], -1])

    def loss(self, shares, embeddings):
        # Per triplet (the shares sum to 1); the engine averages over the global batch.
        return triplet_loss_lib.shares_loss_per_example(
            embeddings[0], embeddings[1], embeddings[2], shares, self.delta, loss=self.loss_name
        )

    def update_metrics(self, metrics, shares, embeddings, per_example_loss, sample_weight=None):
        weight = tf.ones_like(per_example_loss) if sample_weight is None else sample_weight
        correct, counted = triplet_loss_lib.odd_one_hits(
            embeddings[0], embeddings[1], embeddings[2], shares
        )
        metrics["loss"].update_state(per_example_loss, sample_weight=weight)
        # Weight 0 for triplets the filter drops: a batch without any adds nothing to the mean.
        metrics["triplet_accuracy"].update_state(correct, sample_weight=weight * counted)


def class_triplets(x, y, num_triplets, seed):
    """(triplets [n, 3, ...], shares [n, 3]): two images of a class, then one of another, the odd
    one."""
    a, b, c = fec_data.make_class_triplets(x, y, num_triplets, seed)
    return np.stack([x[a], x[b], x[c]], axis=1), np.tile(np.float32([0, 0, 1]), (num_triplets, 1))


def load_triplets(
    dataset,
    *,
    data_dir,
    num_train,
    num_test,
    seed,
    fec_csv="",
    fec_images="",
    image_size=64,
    eval_triplets=0,
    data_in_memory="auto",
    on_corrupt="fail",
    max_image_pixels=MAX_IMAGE_PIXELS,
) -> Data:
    """Data(train, evals={"test": ...}): (triplets, shares) arrays, or for FEC streamed sources
    (fec_data.FECTriplets) unless they fit in memory (--data_in_memory). `eval_triplets` > 0 keeps a
    fixed sample of that many test triplets (the same for every seed, so runs compare)."""
    if dataset == "fec":
        if not (fec_csv and fec_images):
            raise ConfigError("--dataset=fec needs --fec_csv=FILE and --fec_images=DIR")
        rows = {
            subset: fec_data.read_fec_rows(fec_csv, fec_images, subset=subset)
            for subset in ("train", "test")
        }
        rows["test"] = rows["test"].take(_eval_sample(len(rows["test"]), eval_triplets))
        skipped = streaming.SkippedFiles()
        sources = {
            subset: fec_data.FECTriplets(
                r,
                (image_size, image_size, 3),
                on_corrupt=on_corrupt,
                max_image_pixels=max_image_pixels,
                skipped=skipped,
            )
            for subset, r in rows.items()
        }
        size = sum(source.decoded_bytes for source in sources.values())
        what = f"FEC triplets from {fec_csv} ({len(rows['train'])} train, {len(rows['test'])} test)"
        if streaming.choose_in_memory(data_in_memory, size, what):
            sources = {subset: source.arrays() for subset, source in sources.items()}
        return Data(train=sources["train"], evals={"test": sources["test"]})
    ds = datasets.load(dataset, data_dir or None)
    test = class_triplets(ds.x_test, ds.y_test, num_test, seed + 1)
    keep = _eval_sample(num_test, eval_triplets)
    return Data(
        train=class_triplets(ds.x_train, ds.y_train, num_train, seed),
        evals={"test": tuple(a[keep] for a in test)},
    )


def _eval_sample(n: int, size: int) -> np.ndarray:
    """Indices of a fixed sample of `size` of n (all of them for 0), sorted; seed 0 for every
    run."""
    if not size or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


class StepsEpoch(input_pipeline.StreamedSource):
    """A training source whose epoch is `steps` steps (the notebook's steps_per_epoch=200):
    evaluation, history rows and epoch checkpoints come every `steps` steps, while the stream itself
    is the underlying source's (its order f(seed, its own epoch), and its exact resume at any
    step)."""

    def __init__(self, inner, steps: int, global_batch_size: int):
        self.inner, self.steps = inner, steps
        self.num_examples = steps * global_batch_size
        self.example_spec = (
            inner.example_spec
            if isinstance(inner, input_pipeline.StreamedSource)
            else tuple(tf.TensorSpec(a.shape[1:], tf.as_dtype(a.dtype)) for a in inner)
        )

    def train_dataset_fn(
        self, *, steps_per_fetch: int = 1, prefetch=input_pipeline.AUTOTUNE, **kwargs
    ):
        # One step per element from the underlying stream (its epoch need not divide by the fetch),
        # then regrouped into the engine's chunks of `steps_per_fetch` steps.
        inner = input_pipeline.train_dataset_fn(self.inner, steps_per_fetch=1, prefetch=0, **kwargs)

        def dataset_fn(ctx):
            chunks = inner(ctx).unbatch().batch(steps_per_fetch, drop_remainder=True)
            return chunks.prefetch(prefetch) if prefetch else chunks

        return dataset_fn

    def eval_dataset_fn(self, *, global_batch_size: int):
        return input_pipeline.eval_dataset_fn(self.inner, global_batch_size=global_batch_size)

    def head(self, n: int):
        if isinstance(self.inner, input_pipeline.StreamedSource):
            return self.inner.head(n)
        return tuple(a[:n] for a in self.inner)


def _example_shape(source) -> tuple:
    """One triplet's shape [3, H, W, C], of arrays or of a streamed source."""
    if isinstance(source, input_pipeline.StreamedSource):
        return tuple(source.example_spec[0].shape.as_list())
    return source[0].shape[1:]


def train(triplet_config: TripletConfig, config: framework.TrainConfig) -> dict:
    """Trains the embedding; returns result.json's dict (trainers/triplet.py's `run`)."""
    opts = dataclasses.asdict(triplet_config)
    strategy = framework.prepare_runtime(config)
    run_config = {**config.to_dict(), **opts}
    # A --model_dir of another run is refused before the data is read (framework/run_record.py) ...
    check_run_dir(triplet_config, config)
    data = load_triplets(
        opts["dataset"],
        data_dir=opts["data_dir"],
        num_train=opts["num_train"],
        num_test=opts["num_test"],
        seed=config.seed,
        fec_csv=opts["fec_csv"],
        fec_images=opts["fec_images"],
        image_size=opts["image_size"],
        eval_triplets=opts["eval_triplets"],
        data_in_memory=opts["data_in_memory"],
        on_corrupt=opts["on_corrupt"],
        max_image_pixels=opts["max_image_pixels"],
    )
    input_shape = _example_shape(data.train)[1:]
    problem = models.options_error(opts["model"], image_size=min(input_shape[:2]))
    if problem:
        raise ConfigError(
            f"--model={opts['model']} on {input_shape[0]}x{input_shape[1]} images: {problem}"
        )
    # FEC streamed from disk: its skipped files (--on_corrupt=skip) go into result.json.
    streamed = data.train
    if opts["steps_per_epoch"]:
        data = dataclasses.replace(
            data, train=StepsEpoch(data.train, opts["steps_per_epoch"], config.global_batch_size)
        )
    # ... and a run that can start records itself (or moves the old one aside) before the model is
    # built.
    check_run_dir(triplet_config, config, strategy=strategy, write=True)

    def model_fn():
        return triplet_loss_lib.build_embedding_model(
            opts["model"],
            input_shape=input_shape,
            embedding_dim=opts["embedding_dim"],
            scale=opts["scale"],
            dropout=opts["dropout"],
            pretrained=opts["pretrained"],
            seed=config.seed,
        )

    task = TripletTask(opts["delta"], opts["triplet_loss"])
    trainer = framework.build_trainer(
        config,
        data,
        model_fn=model_fn,
        task=task,
        strategy=strategy,
        optimizer_fn=lambda lr: optimizers.build_optimizer(opts["optimizer"], lr),
    )
    plot = opts["plot"] and config.model_dir
    hooks = [_CurvesHook(config.model_dir)] if plot else []
    # A corrupt file met while streaming: one line, exit 2.
    result = run_reading_files(
        framework.Controller(trainer, data, config, hooks=hooks, run_config=run_config), streamed
    )
    if plot:
        hooks[0].write()
    return result


class _CurvesHook:
    """--plot: rewrites curves.png (loss and triplet accuracy) whenever history.json has a new
    row."""

    def __init__(self, model_dir: str):
        self.model_dir, self._seen = model_dir, None

    def write(self) -> None:
        plots.write_curves(self.model_dir, metrics=("loss", "triplet_accuracy"))

    def __call__(self, info) -> bool:
        path = os.path.join(self.model_dir, "history.json")
        stamp = os.path.getmtime(path) if os.path.exists(path) else None
        if stamp is not None and stamp != self._seen:
            self._seen = stamp
            self.write()
        return False
