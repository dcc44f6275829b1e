"""An experiment's data: --dataset's source loaded and cut to the user's subsets (or streamed), the
first images a model needs, and corrupt files met while training named in one line."""

import numpy as np
import tensorflow as tf

from augment.example_ops import alternating_flip
from framework import ConfigError, input_pipeline
from framework.controller import Data
from framework.data import datasets, image_folder, sources, streaming
from trainers import models
from trainers.experiment_config import ExperimentConfig


def whitening_images(model) -> int:
    """How many first training images a built-in --model sets weights from (airbench's whitening);
    0 for the others and for a custom model."""
    if isinstance(model, str) and model in models.MODELS:
        return models.MODELS.get(model).get("whitening", 0)
    return 0


def load_data(exp: ExperimentConfig, seed: int):
    """(the engine's `Data`, the dataset): --dataset's source (framework/data/sources/), decoded and
    cut to the user's subsets, or streamed from disk where its source chose to stream."""
    ds = sources.load(
        exp.dataset,
        exp.data_dir,
        seed=seed,
        image_size=exp.image_size or None,
        in_memory=exp.data_in_memory,
        on_corrupt=exp.on_corrupt,
        max_image_pixels=exp.max_image_pixels,
    )
    if isinstance(ds, streaming.StreamedSplits):
        return _streamed(exp, ds, seed), ds
    ds = datasets.make_subsets(
        ds,
        classes=list(exp.classes) or None,
        train_examples=exp.train_examples or None,
        test_examples=exp.test_examples or None,
        image_size=exp.image_size or None,
        validation_split=exp.validation_split,
        seed=seed,
    )
    x_train, x_test, x_val = ds.x_train, ds.x_test, ds.x_val
    if exp.permute_pixels >= 0:
        x_train, x_test, x_val = (
            permute_pixels(x, exp.permute_pixels) if x is not None else None
            for x in (x_train, x_test, x_val)
        )
    evals = {"test": (x_test, ds.y_test)}
    if x_val is not None and len(x_val):
        evals["val"] = (x_val, ds.y_val)
    data = Data(
        train=(x_train, ds.y_train),
        evals=evals,
        synthetic=exp.synthetic_data,
        pipeline=_pipeline(exp, len(x_train), seed),
    )
    return data, ds


def _pipeline(exp: ExperimentConfig, num_examples: int, seed: int) -> dict:
    """The input pipeline's options: --alternating_flip runs per example, where its epoch is
    known."""
    if not exp.alternating_flip:
        return {}
    return {"example_fn": alternating_flip(num_examples, seed)}


# What needs the training arrays in memory, by the option that asks for it.
_NEEDS_ARRAYS = {
    "classes": lambda e: e.classes,
    "train_examples": lambda e: e.train_examples,
    "test_examples": lambda e: e.test_examples,
    "validation_split": lambda e: e.validation_split,
    "permute_pixels": lambda e: e.permute_pixels >= 0,
    "synthetic_data": lambda e: e.synthetic_data,
    "eval_transforms": lambda e: e.eval_transforms,
    "train_minutes": lambda e: e.train_minutes,
    # Its flip needs each example's id, which only some streamed sources give.
    "alternating_flip": lambda e: (
        e.alternating_flip and not sources.SOURCES.get(e.dataset).get("example_ids", True)
    ),
}


def _streamed(exp: ExperimentConfig, listed: streaming.StreamedSplits, seed: int) -> Data:
    """Data of streamed sources; a ConfigError for an option that needs the arrays in memory."""
    for name, asks in _NEEDS_ARRAYS.items():
        if asks(exp):
            raise ConfigError(
                f"--{name} needs the data in memory, but --dataset={exp.dataset} streams from "
                f"--data_dir (--data_in_memory={exp.data_in_memory}): pass --data_in_memory=yes, "
                f"or drop --{name}"
            )
    train = listed.splits["train"]
    evals = {split: source for split, source in listed.splits.items() if split != "train"}
    return Data(train=train, evals=evals, pipeline=_pipeline(exp, train.num_examples, seed))


def first_images(source, n_or_exp) -> np.ndarray | None:
    """The first images of a source (arrays or streamed); given the ExperimentConfig, airbench's
    whitening images, or None for other models (nothing is read)."""
    if not isinstance(n_or_exp, int):
        n_or_exp = whitening_images(n_or_exp.model)
        if not n_or_exp:
            return None
    if isinstance(source, input_pipeline.StreamedSource):
        return source.head(n_or_exp)[0]
    return source[0][:n_or_exp]


def run_reading_files(controller, ds) -> dict:
    """controller.run(); a corrupt file met while streaming (--on_corrupt=fail) becomes a DataError
    naming it (one line, exit 2), and result.json gets `skipped_files` where images were skipped
    (--on_corrupt=skip)."""
    try:
        result = controller.run()
    except tf.errors.InvalidArgumentError as err:
        sources = list(ds.splits.values()) if hasattr(ds, "splits") else [ds]
        message = image_folder.unreadable_file_message(
            err, sources, first=_files_being_read(controller, sources[0])
        )
        if message is None:
            raise
        raise datasets.DataError(message) from None
    skipped = skipped_files(ds)
    if skipped is not None:
        result["skipped_files"] = skipped
        controller.writer.write_json("result.json", result)
    return result


def _files_being_read(controller, train, batches: int = 8) -> list[str]:
    """The files of the training stream's next `batches` fetches from the step it stopped at
    (prefetching reads a few ahead): where a decode error that names no file was met, unless it was
    met in an evaluation."""
    if not hasattr(train, "example_files"):
        return []
    config, fetch = controller.config, controller.trainer.steps_per_fetch
    step = int(controller.trainer.step.numpy())
    indices = input_pipeline.train_indices(
        train.num_examples,
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        start_step=step,
        steps=batches * fetch,
    )
    return [f for i in indices for f in train.example_files(int(i))]


def skipped_files(ds) -> int | None:
    """Corrupt image files skipped (--on_corrupt=skip): at loading, or met while streaming; None if
    n/a."""
    skipped = getattr(ds, "skipped", None)
    if skipped is None:
        return None
    return (
        skipped.count
        if hasattr(skipped, "count") and not isinstance(skipped, tuple)
        else len(skipped)
    )


def permute_pixels(images: np.ndarray, seed: int) -> np.ndarray:
    """The same fixed permutation of pixel positions for every image (channels move together)."""
    n, h, w, c = images.shape
    order = np.random.default_rng(seed).permutation(h * w)
    return images.reshape(n, h * w, c)[:, order].reshape(n, h, w, c)
