"""The triplet trainer's options (TripletConfig, checked when made) and its run directory's record.

Apart from trainers/triplet_train.py (the run, which needs TensorFlow), so that the command line
builds and checks a configuration, and `--help` answers, without importing TensorFlow.
"""

import dataclasses

from framework import run_record
from framework.config import ConfigError, TrainConfig, option

TRIPLET_DATASETS = ("mnist", "fashion_mnist", "cifar10", "fec")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TripletConfig:
    """What the triplet trainer adds to TrainConfig, checked when made (a ConfigError, one line and
    exit 2 on the command line, for a bad value): run_triplet(config,
    **asdict(TripletConfig(...)))."""

    dataset: str = option("mnist", f"Triplet source: {', '.join(TRIPLET_DATASETS)}.")
    data_dir: str = option("", "Dataset folder ('' = $DATA_DIR, ~/.keras/datasets, download).")
    model: str = option("cnn", "Embedding backbone (a trainers.models name).")
    optimizer: str = option(
        "adam",
        "Optimizer: sgd, adam, adamw, lamb, rmsprop, lion, adabound (trainers/optimizers.py).",
    )
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
        89_478_485,  # framework.data.image_folder.MAX_IMAGE_PIXELS, Pillow's bomb limit
        "FEC: an image whose header says more pixels is refused before "
        "it is decoded (a decompression bomb; --on_corrupt says fail or skip); 0: no "
        "limit.",
    )
    plot: bool = option(False, "Write curves.png into --model_dir at each evaluation.")

    def __post_init__(self):
        from framework.data import streaming  # lazy: keeps TF out of --help
        from trainers import models, optimizers, triplet_loss  # lazy: keeps TF out of --help

        choices = (
            ("dataset", self.dataset, TRIPLET_DATASETS),
            ("optimizer", self.optimizer, optimizers.OPTIMIZERS),
            ("model", self.model, models.MODELS),
            ("triplet_loss", self.triplet_loss, triplet_loss.LOSSES),
            ("data_in_memory", self.data_in_memory, streaming.IN_MEMORY_MODES),
            ("on_corrupt", self.on_corrupt, ("fail", "skip")),
        )
        for name, value, valid in choices:
            if value not in valid:
                raise ConfigError(f"--{name}={value!r}: unknown; valid choices: {', '.join(valid)}")
        for name, ok, rule in (
            ("embedding_dim", self.embedding_dim >= 1, ">= 1"),
            ("scale", self.scale > 0, "> 0"),
            ("delta", self.delta >= 0, ">= 0"),
            ("num_train", self.num_train >= 1, ">= 1"),
            ("num_test", self.num_test >= 1, ">= 1"),
            ("image_size", self.image_size >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("eval_triplets", self.eval_triplets >= 0, ">= 0"),
            ("steps_per_epoch", self.steps_per_epoch >= 0, ">= 0"),
            (
                "max_image_pixels",
                self.max_image_pixels >= 0,
                ">= 0 (a pixel count, or 0 for no limit)",
            ),
        ):
            if not ok:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be {rule}")
        problem = models.options_error(self.model, pretrained=self.pretrained)
        if problem:
            raise ConfigError(
                f"--pretrained with --model={self.model}: {problem}"
                if self.pretrained
                else f"--model={self.model}: {problem}"
            )
        if self.dataset == "fec" and not (self.fec_csv and self.fec_images):
            raise ConfigError("--dataset=fec needs --fec_csv=FILE and --fec_images=DIR")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Options that do not change what a run computes: a run directory resumes whatever their values.
RECORD_IGNORES = ("data_dir", "plot", "data_in_memory")


def check_run_dir(
    triplet_config: TripletConfig, config: TrainConfig, *, strategy=None, write: bool = False
) -> None:
    """Refuses (RunDirectoryError) a model_dir that holds a run of other settings, before anything
    trains (framework/run_record.py); with `write`, also starts afresh there (--fresh_start) and
    records this configuration."""
    recorded = {**config.to_dict(), **triplet_config.to_dict()}
    if write:
        run_record.prepare(
            config.model_dir,
            recorded,
            fresh_start=config.fresh_start,
            strategy=strategy,
            ignore=RECORD_IGNORES,
        )
    elif config.model_dir and not config.fresh_start:
        run_record.check(config.model_dir, recorded, ignore=RECORD_IGNORES)
