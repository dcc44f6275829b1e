"""Metric learning with the vote-weighted triplet loss: `python -m trainers.triplet`.

    python -m trainers.triplet --dataset=mnist                     # triplets from MNIST classes
    python -m trainers.triplet --dataset=fec --fec_csv=F --fec_images=DIR   # Facial Expression Comparison

An embedding network (L2-normalised, scaled) is trained so that the most-similar pair (I1, I2) of a
triplet is closer than either is to the odd one I3. Class triplets take two images of one class and
one of another (every vote 1.0); FEC triplets carry the annotators' top-vote fraction as weight.
Triplet accuracy counts only triplets whose top vote exceeds 0.5.
"""
import dataclasses
import sys

from trainers import cli  # before TensorFlow: cli.import_tensorflow hides its start-up lines

cli.import_tensorflow(verbose="--verbose" in sys.argv)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import framework  # noqa: E402
from framework import ConfigError  # noqa: E402
from framework import config_flags  # noqa: E402
from framework.config import TrainConfig, option  # noqa: E402
from framework import run_record  # noqa: E402
from framework.controller import Data  # noqa: E402
from trainers import fec_data, optimizers, recipes, triplet_loss  # noqa: E402

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
    num_train: int = option(20000, "Class triplets for training.")
    num_test: int = option(2000, "Class triplets for testing.")
    fec_csv: str = option("", "FEC: the CSV (face1, face2, face3, votes1..3, subset).")
    fec_images: str = option("", "FEC: the folder of {id}.jpg.")
    image_size: int = option(64, "FEC: images are resized to this.")


class TripletTask:
    """Batches of (uint8 triplets [B, 3, H, W, C], votes [B]) -> embeddings -> triplet loss."""

    metric_names = ("loss", "triplet_accuracy")
    uses_seed = False

    def __init__(self, delta: float):
        self.delta = delta

    def make_metrics(self):
        return {name: keras.metrics.Mean(name=name) for name in self.metric_names}

    def prepare(self, batch, *, seed, training):
        triplets, votes = batch[0], batch[1]
        return tf.cast(triplets, tf.float32) / 255.0, votes

    def forward(self, model, triplets, *, training):
        """One model call on the 3B images; returns embeddings [3, B, D] (I1, I2, I3)."""
        shape = tf.shape(triplets)
        images = tf.reshape(tf.transpose(triplets, [1, 0, 2, 3, 4]),
                            tf.concat([[3 * shape[0]], shape[2:]], 0))
        embeddings = tf.cast(model(images, training=training), tf.float32)
        return tf.reshape(embeddings, [3, shape[0], -1])

    def loss(self, votes, embeddings):
        # votes * loss per triplet; the engine averages over the global batch.
        return tf.cast(votes, tf.float32) * triplet_loss.triplet_loss_per_example(
            embeddings[0], embeddings[1], embeddings[2], self.delta)

    def update_metrics(self, metrics, votes, embeddings, per_example_loss, sample_weight=None):
        weight = tf.ones_like(per_example_loss) if sample_weight is None else sample_weight
        counted = weight * tf.cast(tf.cast(votes, tf.float32) > 0.5, tf.float32)
        correct = tf.cast(triplet_loss.triplet_correct(embeddings[0], embeddings[1], embeddings[2]), tf.float32)
        metrics["loss"].update_state(per_example_loss, sample_weight=weight)
        metrics["triplet_accuracy"].update_state(correct, sample_weight=counted)


def class_triplets(x, y, num_triplets, seed):
    a, b, c = fec_data.make_class_triplets(x, y, num_triplets, seed)
    return np.stack([x[a], x[b], x[c]], axis=1), np.ones(num_triplets, np.float32)


def load_triplets(dataset, *, data_dir, num_train, num_test, seed, fec_csv="", fec_images="",
                  image_size=64) -> Data:
    if dataset == "fec":
        if not (fec_csv and fec_images):
            raise ConfigError("--dataset=fec needs --fec_csv=FILE and --fec_images=DIR")
        splits = {}
        for subset in ("train", "test"):
            x1, x2, x3, votes = fec_data.load_fec(fec_csv, fec_images, image_size=(image_size, image_size),
                                                  subset=subset)
            triplets = np.stack([x1, x2, x3], axis=1)
            if triplets.dtype != np.uint8:
                triplets = np.clip(np.round(triplets * (255.0 if triplets.max() <= 1.0 else 1.0)), 0,
                                   255).astype(np.uint8)
            splits[subset] = (triplets, votes.astype(np.float32))
        return Data(train=splits["train"], evals={"test": splits["test"]})
    from framework.data import datasets
    ds = datasets.load(dataset, data_dir or None)
    return Data(train=class_triplets(ds.x_train, ds.y_train, num_train, seed),
                evals={"test": class_triplets(ds.x_test, ds.y_test, num_test, seed + 1)})


def run_triplet(config: framework.TrainConfig, *, dataset="mnist", data_dir="", model="cnn",
                embedding_dim=16, scale=4.0, delta=0.5, optimizer="adam", num_train=20000, num_test=2000,
                fec_csv="", fec_images="", image_size=64) -> dict:
    from trainers import models
    if dataset not in TRIPLET_DATASETS:
        raise ConfigError(f"--dataset={dataset!r}: unknown; valid choices: {', '.join(TRIPLET_DATASETS)}")
    if optimizer not in optimizers.OPTIMIZERS:
        raise ConfigError(f"--optimizer={optimizer!r}: unknown; valid choices: {', '.join(optimizers.OPTIMIZERS)}")
    if model not in models.MODELS:
        raise ConfigError(f"--model={model!r}: unknown; valid choices: {', '.join(models.MODELS)}")
    for name, value, ok, rule in (("embedding_dim", embedding_dim, embedding_dim >= 1, ">= 1"),
                                  ("scale", scale, scale > 0, "> 0"), ("delta", delta, delta >= 0, ">= 0"),
                                  ("num_train", num_train, num_train >= 1, ">= 1"),
                                  ("num_test", num_test, num_test >= 1, ">= 1"),
                                  ("image_size", image_size, image_size >= 1, ">= 1")):
        if not ok:
            raise ConfigError(f"--{name}={value}: must be {rule}")
    if dataset == "fec" and not (fec_csv and fec_images):
        raise ConfigError("--dataset=fec needs --fec_csv=FILE and --fec_images=DIR")
    strategy = framework.prepare_runtime(config)
    run_config = {**config.to_dict(), "dataset": dataset, "data_dir": data_dir, "model": model,
                  "embedding_dim": embedding_dim, "scale": scale, "delta": delta, "optimizer": optimizer,
                  "num_train": num_train, "num_test": num_test, "fec_csv": fec_csv, "fec_images": fec_images,
                  "image_size": image_size}
    # A --model_dir of another run is refused before the data is read (framework/run_record.py) ...
    if config.model_dir and not config.fresh_start:
        run_record.check(config.model_dir, run_config, ignore=("data_dir",))
    data = load_triplets(dataset, data_dir=data_dir, num_train=num_train, num_test=num_test, seed=config.seed,
                         fec_csv=fec_csv, fec_images=fec_images, image_size=image_size)
    input_shape = data.train[0].shape[2:]
    problem = models.options_error(model, image_size=min(input_shape[:2]))
    if problem:
        raise ConfigError(f"--model={model} on {input_shape[0]}x{input_shape[1]} images: {problem}")
    # ... and a run that can start records itself (or moves the old one aside) before the model is built.
    run_record.prepare(config.model_dir, run_config, fresh_start=config.fresh_start, strategy=strategy,
                       ignore=("data_dir",))

    def model_fn():
        return triplet_loss.build_embedding_model(model, input_shape=input_shape, embedding_dim=embedding_dim,
                                                  scale=scale, seed=config.seed)

    trainer = framework.build_trainer(config, data, model_fn=model_fn, task=TripletTask(delta), strategy=strategy,
                                      optimizer_fn=lambda lr: optimizers.build_optimizer(optimizer, lr))
    return framework.Controller(trainer, data, config, run_config=run_config).run()


FLAGS = flags.FLAGS


def define_flags() -> None:
    """TripletConfig's and TrainConfig's flags with the trainer's defaults (trainers/recipes.py).
    Defined only when run as a program, so importing this module never clashes with cli's flags."""
    defaults = recipes.defaults("triplet")
    own = {f.name for f in dataclasses.fields(TripletConfig)}
    config_flags.define_flags(TripletConfig, defaults={k: v for k, v in defaults.items() if k in own},
                              key_module="__main__")
    config_flags.define_flags(TrainConfig, defaults={k: v for k, v in defaults.items() if k not in own})
    for name in cli.KEY_TRAIN_OPTIONS:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    if "verbose" not in FLAGS:
        flags.DEFINE_bool("verbose", False, "Show TensorFlow's start-up and C++ info lines (hidden by default).")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}: flags are written --name=value")
    given = {**config_flags.flag_dict(TripletConfig, given_only=True),
             **config_flags.flag_dict(TrainConfig, given_only=True)}
    with cli.exit_codes():
        triplet_config, config = recipes.configs("triplet", None, **given)
        logging.info("%s", cli.describe(triplet_config, config))
        result = run_triplet(config, **dataclasses.asdict(triplet_config))
    print(f"test triplet accuracy: {result['test_triplet_accuracy']:.4f}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
