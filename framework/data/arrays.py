"""Datasets held in memory: `ArrayDataset` (uint8 images, int32 labels, checked when made), the
subsets users ask for (`make_subsets`), their disk cache (`read_cached`, `write_cached`), and
`DataError`, the one-line error of bad or missing data."""

import dataclasses
import os
import re
import tempfile
from typing import Sequence

import numpy as np
import tensorflow as tf
from absl import logging


class DataError(ValueError):
    """Bad or missing data. The message names the dataset or file, the problem, and the fix."""


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """A dataset held in memory. Images are uint8 (N, H, W, C), labels int32 (N,) in [0,
    num_classes)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    x_val: np.ndarray | None = None  # filled by make_subsets(validation_split=...)
    y_val: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if not self.class_names:
            raise DataError(f"{self.name}: `class_names` is empty")
        if (self.x_val is None) != (self.y_val is None):
            raise DataError(f"{self.name}: pass both x_val and y_val, or neither")
        splits = ["train", "test"] + (["val"] if self.x_val is not None else [])
        for split in splits:
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                raise DataError(
                    f"{self.name}: x_{split} must be a uint8 array (N, H, W, C), got "
                    f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
                )
            y = np.asarray(y)
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"{self.name}: y_{split} must be integer labels (N,), got {y.dtype} {y.shape}"
                )
            if len(x) != len(y):
                raise DataError(
                    f"{self.name}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels"
                )
            if len(x) == 0:
                raise DataError(f"{self.name}: the {split} split is empty")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= len(self.class_names):
                raise DataError(
                    f"{self.name}: y_{split} holds labels in [{lo}, {hi}] but there are "
                    f"{len(self.class_names)} classes; the labels must lie in "
                    f"[0, {len(self.class_names) - 1}] (wrong or corrupt data file?)"
                )
            if y.dtype != np.int32:  # a copy, only when a caller passes other integer labels
                object.__setattr__(self, f"y_{split}", y.astype(np.int32))
            if x.shape[1:] != self.x_train.shape[1:]:
                raise DataError(
                    f"{self.name}: x_{split} images are {x.shape[1:]} but x_train images are "
                    f"{self.x_train.shape[1:]}; all splits need one image size"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def tf_error_text(e: tf.errors.OpError) -> str:
    """The useful part of a TF op error: its last line, without the function-node prefix and op
    suffix."""
    text = e.message.strip().splitlines()[-1] if e.message.strip() else type(e).__name__
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", re.sub(r"\{\{[^}]*\}\}\s*", "", text))[:300]


# --------------------------------------------------------------------------------------------------
# Subsets.


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def resize_images(images: np.ndarray, image_size: int, *, batch_size: int = 2048) -> np.ndarray:
    """Resizes uint8 (N, H, W, C) images to (N, image_size, image_size, C): bilinear with
    antialiasing (so downscaling averages, not aliases), rounded and clipped back to uint8."""
    if images.shape[1:3] == (image_size, image_size):
        return images
    out = np.empty((len(images), image_size, image_size, images.shape[-1]), np.uint8)
    for start in range(0, len(images), batch_size):  # batches bound the float32 copy
        batch = tf.image.resize(
            images[start : start + batch_size], (image_size, image_size), antialias=True
        )
        out[start : start + batch_size] = tf.cast(
            tf.clip_by_value(tf.round(batch), 0, 255), tf.uint8
        ).numpy()
    return out


def _split(n, fraction, seed, stream) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (held out, kept) split of range(n), each sorted so the data keep their order."""
    n_out = int(round(n * fraction))
    perm = np.random.default_rng([seed, stream]).permutation(n)
    return np.sort(perm[:n_out]), np.sort(perm[n_out:])


def make_subsets(
    ds: ArrayDataset,
    *,
    classes: Sequence[int] | None = None,
    train_examples: int | None = None,
    test_examples: int | None = None,
    image_size: int | None = None,
    validation_split: float = 0.0,
    seed: int = 0,
) -> ArrayDataset:
    """The subset users ask for, applied in this order:

    classes: keep these classes, relabelled 0..k-1 in the order given (class_names follow).
    train_examples: keep a fixed random subset of N training examples (chosen by `seed`; the subset
        for N is contained in the one for any larger N).
    test_examples: keep a fixed random subset of N test examples, the same for every `seed` (so runs
        with different seeds are scored on the same images): a quicker, noisier evaluation.
    validation_split: hold out this fraction of the (remaining) training examples as x_val/y_val.
    image_size: resize every split to image_size x image_size.
    """
    if classes is not None:
        classes = list(classes)
        if not classes or not all(_is_int(c) for c in classes):
            raise ValueError(f"`classes` ({classes}) must be a non-empty list of class indices")
        if len(set(classes)) != len(classes):
            raise ValueError(f"`classes` ({classes}) lists a class twice")
        bad = [c for c in classes if not 0 <= c < ds.num_classes]
        if bad:
            raise DataError(
                f"{ds.name}: `classes` ({classes}) has {bad}, outside [0, {ds.num_classes - 1}]"
            )
    for name, value in (("train_examples", train_examples), ("test_examples", test_examples)):
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"`{name}` ({value}) must be a positive integer")
    if image_size is not None and (not _is_int(image_size) or image_size < 1):
        raise ValueError(f"`image_size` ({image_size}) must be a positive integer")
    if not isinstance(validation_split, (int, float)) or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"`validation_split` ({validation_split}) must be a fraction in [0, 1)")
    if validation_split and ds.x_val is not None:
        raise DataError(f"{ds.name}: already has a validation split; pass validation_split=0")
    if not _is_int(seed):
        raise ValueError(f"`seed` ({seed}) must be an integer")

    splits = {s: (getattr(ds, f"x_{s}"), getattr(ds, f"y_{s}")) for s in ("train", "test", "val")}
    class_names = ds.class_names
    if classes is not None:
        new_label = np.full(ds.num_classes, -1, np.int32)
        new_label[classes] = np.arange(len(classes), dtype=np.int32)
        for s, (x, y) in splits.items():
            if x is not None:
                keep = new_label[y] >= 0
                if not keep.any():
                    raise DataError(f"{ds.name}: `classes` ({classes}) leaves the {s} split empty")
                splits[s] = (x[keep], new_label[y[keep]])
        class_names = tuple(ds.class_names[c] for c in classes)
    for split, count, rng_key in (
        ("train", train_examples, [seed, 0]),
        ("test", test_examples, [0, 2]),
    ):
        if count is not None:
            x, y = splits[split]
            if count > len(x):
                raise DataError(
                    f"{ds.name}: `{split}_examples` ({count}) is more than the {len(x)} "
                    f"{split} examples available; pass at most {len(x)}"
                )
            idx = np.sort(np.random.default_rng(rng_key).permutation(len(x))[:count])
            splits[split] = (x[idx], y[idx])
    if validation_split:
        x, y = splits["train"]
        val, train = _split(len(x), validation_split, seed, stream=1)
        if len(val) == 0 or len(train) == 0:
            raise DataError(
                f"{ds.name}: `validation_split` ({validation_split}) of {len(x)} training examples "
                f"leaves {len(val)} for validation and {len(train)} for training; both must be "
                f"non-empty"
            )
        splits["val"], splits["train"] = (x[val], y[val]), (x[train], y[train])
    if image_size is not None:
        splits = {
            s: (x if x is None else resize_images(x, image_size), y) for s, (x, y) in splits.items()
        }
    return dataclasses.replace(
        ds,
        class_names=class_names,
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        x_val=splits["val"][0],
        y_val=splits["val"][1],
    )


# --------------------------------------------------------------------------------------------------
# The disk cache of decoded datasets.


def read_cached(name, cached_path, source) -> ArrayDataset | None:
    """The decoded arrays from the disk cache, or None when absent or unusable (then we decode
    again)."""
    if not os.path.isfile(cached_path):
        return None
    try:
        with np.load(cached_path, allow_pickle=False) as f:
            if str(f["source"]) != source:
                raise ValueError("written for another source file")
            a = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test", "class_names")}
        for split in ("train", "test"):
            x, y = a[f"x_{split}"], a[f"y_{split}"]
            if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int32 or y.shape != (len(x),):
                raise ValueError(f"bad {split} arrays: {x.dtype} {x.shape}, {y.dtype} {y.shape}")
        ds = ArrayDataset(
            name,
            a["x_train"],
            a["y_train"],
            a["x_test"],
            a["y_test"],
            tuple(str(c) for c in a["class_names"]),
        )
    except Exception as e:  # noqa: BLE001 -- whatever is wrong with the cache, decoding again fixes it
        logging.warning(
            "Ignoring the decoded-data cache %s (%s: %s); decoding again",
            cached_path,
            type(e).__name__,
            e,
        )
        return None
    logging.info("Loaded decoded %s from the cache %s", name, cached_path)
    return ds


def write_cached(ds: ArrayDataset, cached_path, source) -> None:
    """Writes the cache atomically (temp file + rename): readers never see a half-written file."""
    tmp = None
    try:
        os.makedirs(os.path.dirname(cached_path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cached_path), prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                x_train=ds.x_train,
                y_train=ds.y_train,
                x_test=ds.x_test,
                y_test=ds.y_test,
                class_names=np.array(ds.class_names),
                source=np.array(source),
            )
        os.chmod(
            tmp, 0o644
        )  # mkstemp makes it private; the cache is as readable as the data it holds
        os.replace(tmp, cached_path)
        logging.info("Cached decoded %s at %s", ds.name, cached_path)
    except OSError as e:  # a read-only or full disk costs speed, not correctness
        logging.warning(
            "Could not write the cache %s (%s); set TFLOOPS_CACHE_DIR to a writable folder",
            cached_path,
            e,
        )
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
