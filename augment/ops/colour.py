"""Colour ops: brightness, contrast, saturation, hue per sample, and `normalize`.

Own ops: tf.image.adjust_* / stateless_random_* take one factor for the whole batch. uint8 images
are converted to float32 [0, 1] and back; `normalize` returns float32 (no longer in [0, 1]).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from augment.ops.core import (
    OPS,
    Draws,
    check_images,
    check_nonnegative,
    check_seed,
    is_pair,
    per_sample,
    to_float,
)

_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # the ones tf.image.rgb_to_grayscale uses


@OPS.register("brightness", xla=True)
def random_brightness(images, seed, *, max_delta: float = 0.2):
    """Adds delta ~ U[-max_delta, max_delta] per sample (as tf.image.adjust_brightness), clips to
    [0, 1]."""
    images, seed = check_images(images), check_seed(seed)
    check_nonnegative(max_delta=max_delta)
    x, back = to_float(images)
    delta = Draws(seed, 1, tf.shape(x)[0]).uniform(-max_delta, max_delta)
    return back(tf.clip_by_value(x + per_sample(delta), 0.0, 1.0))


@OPS.register("brightness_scale", xla=True)
def random_brightness_scale(images, seed, *, factors=(0.8, 1.2)):
    """Multiplies each image by f ~ U[factors[0], factors[1]] per sample, clips to [0, 1]: Keras'
    ImageDataGenerator(brightness_range=factors) (PIL's ImageEnhance.Brightness is this product);
    `random_brightness` adds instead."""
    images, seed = check_images(images), check_seed(seed)
    if not (is_pair(factors) and 0.0 <= factors[0] <= factors[1]):
        raise ValueError(f"`factors` ({factors!r}) must be (low, high) with 0 <= low <= high")
    x, back = to_float(images)
    factor = Draws(seed, 1, tf.shape(x)[0]).uniform(float(factors[0]), float(factors[1]))
    return back(tf.clip_by_value(x * per_sample(factor), 0.0, 1.0))


@OPS.register("contrast", xla=True)
def random_contrast(images, seed, *, max_delta: float = 0.2):
    """Scales each channel's deviation from its image mean by f ~ U[1 - max_delta, 1 + max_delta]
    per sample (as tf.image.adjust_contrast), clips to [0, 1]."""
    images, seed = check_images(images), check_seed(seed)
    check_nonnegative(max_delta=max_delta)
    x, back = to_float(images)
    factor = per_sample(Draws(seed, 1, tf.shape(x)[0]).uniform(1.0 - max_delta, 1.0 + max_delta))
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    return back(tf.clip_by_value((x - mean) * factor + mean, 0.0, 1.0))


@OPS.register("saturation", xla=True)
def random_saturation(images, seed, *, max_delta: float = 0.2):
    """Blends each RGB image with its grayscale by f ~ U[1 - max_delta, 1 + max_delta] per sample
    (f=0 gray, f>1 more saturated; torchvision's definition), clips to [0, 1]. No-op unless C ==
    3."""
    images, seed = check_images(images), check_seed(seed)
    check_nonnegative(max_delta=max_delta)
    if images.shape[-1] != 3:
        return images
    x, back = to_float(images)
    factor = per_sample(Draws(seed, 1, tf.shape(x)[0]).uniform(1.0 - max_delta, 1.0 + max_delta))
    gray = tf.reduce_sum(x * tf.constant(_GRAY_WEIGHTS), axis=-1, keepdims=True)
    return back(tf.clip_by_value(gray + factor * (x - gray), 0.0, 1.0))


def _hue_matrices(turns):
    """[B, 3, 3] RGB maps rotating chroma (I, Q of YIQ) by `turns` [B] of a full circle, written as
    I + (cos - 1) P + sin K so that 0 turns is exactly the identity."""
    rgb_to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq_to_rgb = np.linalg.inv(rgb_to_yiq)
    chroma = yiq_to_rgb @ np.diag([0.0, 1.0, 1.0]) @ rgb_to_yiq
    rotate = (
        yiq_to_rgb @ np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]) @ rgb_to_yiq
    )
    angle = 2.0 * math.pi * turns[:, None, None]
    return (
        tf.eye(3)
        + (tf.cos(angle) - 1.0) * tf.constant(chroma, tf.float32)
        + tf.sin(angle) * tf.constant(rotate, tf.float32)
    )


@OPS.register("hue", xla=True)
def random_hue(images, seed, *, max_delta: float = 0.05):
    """Rotates hue by delta ~ U[-max_delta, max_delta] turns per sample (positive: red towards
    green), as a rotation of the chroma plane of YIQ (like DALI's Hue or CSS hue-rotate; close to,
    not equal to, tf.image.adjust_hue's HSV shift), then clips to [0, 1]. No-op unless C == 3.

    Own op: besides the one-delta-per-batch limit, the HSV round trip picks the hue formula by
    testing `channel == max(channels)`, which XLA can break when it fuses it after other arithmetic
    (on CPU after a bilinear resample, pixels got another hue); a 3x3 matrix per sample has no such
    test.
    """
    images, seed = check_images(images), check_seed(seed)
    if not 0.0 <= max_delta <= 0.5:
        raise ValueError(f"`max_delta` ({max_delta}) must be in [0, 0.5]")
    if images.shape[-1] != 3:
        return images
    x, back = to_float(images)
    turns = Draws(seed, 1, tf.shape(x)[0]).uniform(-max_delta, max_delta)
    rgb = tf.einsum("bhwc,bdc->bhwd", x, _hue_matrices(turns))
    return back(tf.clip_by_value(rgb, 0.0, 1.0))


@OPS.register("normalize", xla=True)
def normalize(
    images, seed=None, *, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5
):
    """(x - mean) / std per channel, x in [0, 1] (uint8 is divided by 255 first). Returns float32,
    no longer in [0, 1], so put it last. Deterministic: `seed` is ignored (accepted so it
    composes)."""
    del seed
    x, _ = to_float(check_images(images))
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (x - mean) / std
