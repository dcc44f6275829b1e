"""Metric learning with the vote-weighted triplet loss: `python -m trainers.triplet`.

    python -m trainers.triplet --dataset=mnist                     # triplets from MNIST classes
    python -m trainers.triplet --dataset=fec --fec_csv=F --fec_images=DIR   # Facial Expression Comparison

An embedding network (L2-normalised, scaled) is trained so that the pair of faces the annotators
found most similar is closer than either is to the odd one out. A triplet is three images in the
order of its source (the FEC CSV's face1..3) and the share of annotators who picked each as the odd one
out; class triplets take two images of one class and one of another (shares 0, 0, 1).
--triplet_loss=vote_weighted (the notebook's, default) sums the triplet loss of all three orderings,
each weighted by its share; top_vote keeps only the top-voted ordering (weighted by its share).
Triplet accuracy counts only triplets whose top share exceeds 0.5 (trainers/triplet_loss.py, odd_one_hits).
"""

import dataclasses
import json
import sys

from trainers import cli  # before TensorFlow: cli.import_tensorflow hides its start-up lines

cli.import_tensorflow(verbose="--verbose" in sys.argv)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import framework  # noqa: E402
from framework import ConfigError, config_flags, input_pipeline, run_record  # noqa: E402
from framework.config import TrainConfig, option  # noqa: E402
from framework.controller import Data  # noqa: E402
from framework.data.image_folder import MAX_IMAGE_PIXELS  # noqa: E402
from trainers import fec_data, optimizers, recipes  # noqa: E402
from trainers import triplet_loss as triplet_loss_lib  # noqa: E402

TRIPLET_DATASETS = ("mnist", "fashion_mnist", "cifar10", "fec")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TripletConfig:
    """What the triplet trainer adds to TrainConfig: run_triplet(config, **asdict(TripletConfig(...)))."""

    dataset: str = option("mnist", f"Triplet source: {', '.join(TRIPLET_DATASETS)}.")
    data_dir: str = option("", "Dataset folder ('' = $DATA_DIR, ~/.keras/datasets, download).")
    model: str = option("cnn", "Embedding backbone (a trainers.models name).")
    optimizer: str = option("adam", f"Optimizer: {', '.join(optimizers.OPTIMIZERS)}.")
    embedding_dim: int = option(16, "Embedding size.")
    scale: float = option(4.0, "Embeddings are L2-normalised, then multiplied by this.")
    delta: float = option(0.5, "Triplet margin.")
    triplet_loss: str = option(
        "vote_weighted",
        "vote_weighted: sum over the three orderings weighted by "
        "their vote shares (the notebook's); top_vote: the top-voted ordering only.",
    )
    num_train: int = option(20000, "Class triplets for training.")
    num_test: int = option(2000, "Class triplets for testing.")
    fec_csv: str = option("", "FEC: the CSV (face1, face2, face3, votes1..3, subset).")
    fec_images: str = option("", "FEC: the folder of {id}.jpg.")
    image_size: int = option(64, "FEC: images are resized to this.")
    dropout: float = option(0.0, "Dropout rate before the embedding layer (0: none).")
    pretrained: bool = option(False, "efficientnet*: the backbone starts from ImageNet weights.")
    eval_triplets: int = option(
        0,
        "Evaluate on a fixed sample of N test triplets (0: all; the notebook's "
        "validation_steps=200 is 200 x the batch).",
    )
    steps_per_epoch: int = option(
        0,
        "An epoch (evaluation, history row, checkpoint) is N steps, the stream "
        "going on across them (the notebook: 200); 0: one pass over the triplets.",
    )
    data_in_memory: str = option(
        "auto",
        "FEC: decode every image into memory (yes), stream them from disk "
        "while training (no), or auto: in memory when they fit (logged in one line).",
    )
    on_corrupt: str = option(
        "fail", "FEC: an unreadable image fails naming the file (fail) or is skipped."
    )
    max_image_pixels: int = option(
        MAX_IMAGE_PIXELS,
        "FEC: an image whose header says more pixels is refused before "
        "it is decoded (a decompression bomb; --on_corrupt says fail or skip); 0: no "
        "limit.",
    )
    plot: bool = option(False, "Write curves.png into --model_dir at each evaluation.")


class TripletTask:
    """Batches of (uint8 triplets [B, 3, H, W, C], odd-one-out vote shares [B, 3]) -> embeddings -> loss."""

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
    """(triplets [n, 3, ...], shares [n, 3]): two images of a class, then one of another, the odd one."""
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
        from framework.data import streaming

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
    from framework.data import datasets

    ds = datasets.load(dataset, data_dir or None)
    test = class_triplets(ds.x_test, ds.y_test, num_test, seed + 1)
    keep = _eval_sample(num_test, eval_triplets)
    return Data(
        train=class_triplets(ds.x_train, ds.y_train, num_train, seed),
        evals={"test": tuple(a[keep] for a in test)},
    )


def _eval_sample(n: int, size: int) -> np.ndarray:
    """Indices of a fixed sample of `size` of n (all of them for 0), sorted; seed 0 for every run."""
    if not size or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


class StepsEpoch(input_pipeline.StreamedSource):
    """A training source whose epoch is `steps` steps (the notebook's steps_per_epoch=200): evaluation,
    history rows and epoch checkpoints come every `steps` steps, while the stream itself is the
    underlying source's (its order f(seed, its own epoch), and its exact resume at any step)."""

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


# Options that do not change what a run computes: a run directory resumes whatever their values.
RECORD_IGNORES = ("data_dir", "plot", "data_in_memory")


def check_run_dir(triplet_config: TripletConfig, config: TrainConfig) -> None:
    """Refuses (RunDirectoryError) a model_dir that holds a run of other settings, before anything trains."""
    if config.model_dir and not config.fresh_start:
        run_record.check(
            config.model_dir,
            {**config.to_dict(), **dataclasses.asdict(triplet_config)},
            ignore=RECORD_IGNORES,
        )


def run_series(
    triplet_config: TripletConfig,
    config: TrainConfig,
    *,
    sweep: str = "",
    variants: str = "",
    repeats: int = 1,
    given: dict | None = None,
):
    """--sweep (a grid, e.g. 'scale=4,8;embedding_dim=16,32'), --variants (named settings) and --repeats
    for the triplet trainer, through trainers/repeats.py: each cell `repeats` times in
    model_dir/<cell>/repeat_<i>; sweep.md/json rank the cells by test triplet accuracy (mean ± std),
    compare.md every final metric. `given`: the command line's options, under every cell's."""
    from trainers import repeats as series

    given = dict(given or {})

    def run(t, c):
        return run_triplet(c, **dataclasses.asdict(t))

    if sweep or variants:
        cells = series.sweep_cells(
            config.model_dir,
            grid=sweep,
            variants=variants,
            given=given,
            config_classes=(TripletConfig, TrainConfig),
            build=lambda cell: recipes.configs("triplet", None, **{**given, **cell}),
        )
        return series.run_sweep_cells(
            config.model_dir,
            cells,
            repeats,
            run=run,
            check=check_run_dir,
            metric="test_triplet_accuracy",
        )
    if not config.model_dir:
        raise ConfigError("--repeats needs --model_dir (each repeat writes its model there)")
    cell = series.Cell("", {}, triplet_config, config, exports=series.exports_given(given))
    return series.run_cells(config.model_dir, [cell], repeats, run=run, check=check_run_dir)[0]


def check_options(
    *,
    dataset,
    model,
    optimizer,
    embedding_dim,
    scale,
    delta,
    num_train,
    num_test,
    image_size,
    triplet_loss: str,
    dropout: float,
    pretrained: bool,
    eval_triplets: int,
    steps_per_epoch: int,
    data_in_memory: str,
    on_corrupt: str,
    fec_csv: str,
    fec_images: str,
    max_image_pixels: int,
    **unused,
) -> None:
    """The triplet options' checks that need no data: a ConfigError (one line, exit 2) for a bad one."""
    from framework.data import streaming
    from trainers import models

    choices = (
        ("dataset", dataset, TRIPLET_DATASETS),
        ("optimizer", optimizer, optimizers.OPTIMIZERS),
        ("model", model, models.MODELS),
        ("triplet_loss", triplet_loss, triplet_loss_lib.LOSSES),
        ("data_in_memory", data_in_memory, streaming.IN_MEMORY_MODES),
        ("on_corrupt", on_corrupt, ("fail", "skip")),
    )
    for name, value, valid in choices:
        if value not in valid:
            raise ConfigError(f"--{name}={value!r}: unknown; valid choices: {', '.join(valid)}")
    for name, value, ok, rule in (
        ("embedding_dim", embedding_dim, embedding_dim >= 1, ">= 1"),
        ("scale", scale, scale > 0, "> 0"),
        ("delta", delta, delta >= 0, ">= 0"),
        ("num_train", num_train, num_train >= 1, ">= 1"),
        ("num_test", num_test, num_test >= 1, ">= 1"),
        ("image_size", image_size, image_size >= 1, ">= 1"),
        ("dropout", dropout, 0 <= dropout < 1, "in [0, 1)"),
        ("eval_triplets", eval_triplets, eval_triplets >= 0, ">= 0"),
        ("steps_per_epoch", steps_per_epoch, steps_per_epoch >= 0, ">= 0"),
        (
            "max_image_pixels",
            max_image_pixels,
            max_image_pixels >= 0,
            ">= 0 (a pixel count, or 0 for no limit)",
        ),
    ):
        if not ok:
            raise ConfigError(f"--{name}={value}: must be {rule}")
    problem = models.options_error(model, pretrained=pretrained)
    if problem:
        raise ConfigError(
            f"--pretrained with --model={model}: {problem}"
            if pretrained
            else f"--model={model}: {problem}"
        )
    if dataset == "fec" and not (fec_csv and fec_images):
        raise ConfigError("--dataset=fec needs --fec_csv=FILE and --fec_images=DIR")


def run_triplet(config: framework.TrainConfig, **options) -> dict:
    """Trains the embedding; returns result.json's dict. `options`: TripletConfig's fields (a notebook:
    run_triplet(config, **dataclasses.asdict(TripletConfig(...))) or recipes.configs("triplet", ...))."""
    unknown = set(options) - {f.name for f in dataclasses.fields(TripletConfig)}
    if unknown:
        raise ConfigError(f"run_triplet: unknown option(s) {', '.join(sorted(unknown))}")
    opts = dataclasses.asdict(TripletConfig(**options))
    check_options(**opts)
    strategy = framework.prepare_runtime(config)
    run_config, ignore = {**config.to_dict(), **opts}, RECORD_IGNORES
    # A --model_dir of another run is refused before the data is read (framework/run_record.py) ...
    if config.model_dir and not config.fresh_start:
        run_record.check(config.model_dir, run_config, ignore=ignore)
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
    from trainers import models

    problem = models.options_error(opts["model"], image_size=min(input_shape[:2]))
    if problem:
        raise ConfigError(
            f"--model={opts['model']} on {input_shape[0]}x{input_shape[1]} images: {problem}"
        )
    streamed = (
        data.train
    )  # FEC streamed from disk: its skipped files (--on_corrupt=skip) go into result.json
    if opts["steps_per_epoch"]:
        data = dataclasses.replace(
            data, train=StepsEpoch(data.train, opts["steps_per_epoch"], config.global_batch_size)
        )
    # ... and a run that can start records itself (or moves the old one aside) before the model is built.
    run_record.prepare(
        config.model_dir,
        run_config,
        fresh_start=config.fresh_start,
        strategy=strategy,
        ignore=ignore,
    )

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
    from trainers.experiment import (
        run_reading_files,  # a corrupt file met while streaming: one line, exit 2
    )

    result = run_reading_files(
        framework.Controller(trainer, data, config, hooks=hooks, run_config=run_config), streamed
    )
    if plot:
        hooks[0].write()
    return result


class _CurvesHook:
    """--plot: rewrites curves.png (loss and triplet accuracy) whenever history.json has a new row."""

    def __init__(self, model_dir: str):
        self.model_dir, self._seen = model_dir, None

    def write(self) -> None:
        from trainers import plots

        plots.write_curves(self.model_dir, metrics=("loss", "triplet_accuracy"))

    def __call__(self, info) -> bool:
        import os

        path = os.path.join(self.model_dir, "history.json")
        stamp = os.path.getmtime(path) if os.path.exists(path) else None
        if stamp is not None and stamp != self._seen:
            self._seen = stamp
            self.write()
        return False


FLAGS = flags.FLAGS


def define_flags() -> None:
    """TripletConfig's and TrainConfig's flags with the trainer's defaults (trainers/recipes.py).
    Defined only when run as a program, so importing this module never clashes with cli's flags."""
    defaults = recipes.defaults("triplet")
    own = {f.name for f in dataclasses.fields(TripletConfig)}
    config_flags.define_flags(
        TripletConfig,
        defaults={k: v for k, v in defaults.items() if k in own},
        key_module="__main__",
    )
    config_flags.define_flags(
        TrainConfig, defaults={k: v for k, v in defaults.items() if k not in own}
    )
    for name in cli.KEY_TRAIN_OPTIONS:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    if "verbose" not in FLAGS:
        flags.DEFINE_bool(
            "verbose", False, "Show TensorFlow's start-up and C++ info lines (hidden by default)."
        )
    flags.DEFINE_integer(
        "repeats", 1, "Train N fresh models (seeds seed..seed+N-1): mean/std of every metric."
    )
    flags.DEFINE_string(
        "sweep",
        "",
        "A grid over flags, e.g. 'scale=4,8;embedding_dim=16,32'; each cell "
        "--repeats times in model_dir/<cell>/repeat_<i>; writes sweep.md, sweep.json, compare.md.",
    )
    flags.DEFINE_string(
        "variants",
        "",
        "Named variants over this command line, e.g. "
        "'baseline:;big:embedding_dim=64 scale=8' (as --sweep, one factor at a time).",
    )
    for name in ("repeats", "sweep", "variants"):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: flags are written --name=value")
    given = {
        **config_flags.flag_dict(TripletConfig, given_only=True),
        **config_flags.flag_dict(TrainConfig, given_only=True),
    }
    with cli.exit_codes():
        triplet_config, config = recipes.configs("triplet", None, **given)
        logging.info("%s", cli.describe(triplet_config, config))
        if FLAGS.sweep or FLAGS.variants or FLAGS.repeats != 1:
            summary = run_series(
                triplet_config,
                config,
                sweep=FLAGS.sweep,
                variants=FLAGS.variants,
                repeats=FLAGS.repeats,
                given=given,
            )
            if not (FLAGS.sweep or FLAGS.variants):
                print(json.dumps(summary, indent=1))
            return
        result = run_triplet(config, **dataclasses.asdict(triplet_config))
    print(f"test triplet accuracy: {result['test_triplet_accuracy']:.4f}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
