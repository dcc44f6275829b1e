"""Batch augmentations that run inside a compiled train step (tf.function, jit_compile=True, replica
ctx).

One module per family, each op registered in `OPS` where it is defined (see core.py for what an
entry declares); a new module in this package is found by itself on the first lookup:

    core.py       the registry, seeds, checks, per-sample draws, `sometimes`, `eval_counterpart`
    geometric.py  flip, crop, crop_to, rotate, translate, zoom, shear, affine
    erasing.py    cutout, erase
    colour.py     brightness, brightness_scale, contrast, saturation, hue, normalize
    mixing.py     mixup, cutmix, mixup_or_cutmix (label ops)

Signatures (what `compose` relies on):
  image op: op(images, seed, **options) -> images
  label op: op(images, labels, seed, *, num_classes, **options) -> (images, soft_labels)

Dtypes and ranges: every op takes float32 images in [0, 1] and returns float32 in [0, 1], except
`normalize` (float32, zero mean / unit std per channel). uint8 [0, 255] images are also accepted and
returned as uint8 by every op except `mixup` and `mixup_or_cutmix` (float only) and `normalize`
(returns float32): flip, crop, cutout, erasing and cutmix only move or overwrite pixels; the
geometric ops blend in float32 and round back; colour ops convert to float32 [0, 1] and back.

Zero strength is the identity: prob=0 (flip, mixing ops, erasing), padding=0, max_degrees=0,
max_fraction=0, size=0, max_delta=0, max_shear=0, factors=(1, 1). `sometimes(op, prob)` applies any
image op to each sample with probability `prob` (a spec's `prob=` on an op without one).
"""

from augment.ops.colour import (
    normalize,
    random_brightness,
    random_brightness_scale,
    random_contrast,
    random_hue,
    random_saturation,
)
from augment.ops.core import (
    OPS,
    compiles,
    eval_counterpart,
    mixes_labels,
    options,
    sometimes,
    split_seed,
)
from augment.ops.erasing import random_cutout, random_erasing
from augment.ops.geometric import (
    affine_transform,
    center_crop,
    random_affine,
    random_crop,
    random_crop_to,
    random_flip_lr,
    random_rotation,
    random_shear,
    random_translation,
    random_zoom,
    rotate,
    shear,
)
from augment.ops.mixing import cutmix, mixup, mixup_or_cutmix, soft_labels

__all__ = [
    "OPS",
    "split_seed",
    "mixes_labels",
    "compiles",
    "options",
    "eval_counterpart",
    "sometimes",
    "soft_labels",
    "random_flip_lr",
    "random_crop",
    "random_crop_to",
    "center_crop",
    "rotate",
    "shear",
    "affine_transform",
    "random_affine",
    "random_rotation",
    "random_translation",
    "random_zoom",
    "random_shear",
    "random_cutout",
    "random_erasing",
    "random_brightness",
    "random_brightness_scale",
    "random_contrast",
    "random_saturation",
    "random_hue",
    "normalize",
    "mixup",
    "cutmix",
    "mixup_or_cutmix",
]
