"""Erasing ops: a box of each image overwritten (cutout: fixed size; random erasing: random area
and aspect). Any dtype: they only overwrite pixels. Own ops: tfa is gone and Keras has no cutout.
"""

from __future__ import annotations

import math

import tensorflow as tf

from augment.ops.core import (
    OPS,
    Draws,
    box_mask,
    check_images,
    check_prob,
    check_seed,
    is_pair,
    random01,
    saturate_uint8,
)
from framework.seeds import fold_in


@OPS.register("cutout", xla=True)
def random_cutout(
    images, seed, *, size=8, fill_value: float = 0.0, fully_inside: bool = False, prob: float = 1.0
):
    """Sets a `size` (int or (h, w)) patch of each image to `fill_value`, like
    tfa.image.random_cutout.

    With fully_inside=False (tfa's and the Cutout paper's behaviour) the patch centre is uniform
    over the image and the patch is clipped at the border, so between ceil(h/2)*ceil(w/2) and h*w
    pixels are set; fully_inside=True places the whole patch inside (exactly h*w pixels).
    `fill_value` is in the images' own scale. Any dtype. Own op: tfa is gone and Keras has no
    cutout.
    """
    images, seed = check_images(images), check_seed(seed)
    check_prob(prob)
    _, height, width, _ = images.shape
    box_h, box_w = (
        (size, size) if isinstance(size, int) else tuple(size) if is_pair(size) else (None, None)
    )
    if not (isinstance(box_h, int) and isinstance(box_w, int)):
        raise ValueError(f"`size` ({size!r}) must be an int or (height, width)")
    if not (0 <= box_h <= height and 0 <= box_w <= width):
        raise ValueError(f"`size` ({size}) must fit in the {height}x{width} image")
    batch = tf.shape(images)[0]
    draws = Draws(seed, 3, batch)
    if fully_inside:
        y0 = draws.integers(0, height - box_h + 1)
        x0 = draws.integers(0, width - box_w + 1)
    else:
        y0 = draws.integers(0, height) - box_h // 2
        x0 = draws.integers(0, width) - box_w // 2
    apply = tf.cast(draws.bernoulli(prob), tf.int32)
    mask = box_mask(height, width, y0, x0, box_h * apply, box_w * apply)
    return tf.where(mask, tf.cast(fill_value, images.dtype), images)


@OPS.register("erase", xla=True)
def random_erasing(
    images,
    seed,
    *,
    prob: float = 0.5,
    area=(0.02, 0.33),
    aspect=(0.3, 3.3),
    fill_value: float | None = None,
):
    """Random erasing (Zhong et al. 2017): with probability `prob`, a box of random area fraction
    (uniform in `area`) and aspect ratio (log-uniform in `aspect`), fully inside the image, is
    filled with uniform noise (fill_value=None) or `fill_value` (images' own scale). Any dtype."""
    images, seed = check_images(images), check_seed(seed)
    check_prob(prob)
    _, height, width, channels = images.shape
    batch = tf.shape(images)[0]
    draws = Draws(seed, 5, batch)
    frac = draws.uniform(area[0], area[1])
    ratio = tf.exp(draws.uniform(math.log(aspect[0]), math.log(aspect[1])))
    box_h = tf.clip_by_value(
        tf.cast(tf.round(tf.sqrt(frac * height * width * ratio)), tf.int32), 0, height
    )
    box_w = tf.clip_by_value(
        tf.cast(tf.round(tf.sqrt(frac * height * width / ratio)), tf.int32), 0, width
    )
    box_h *= tf.cast(draws.bernoulli(prob), tf.int32)
    y0 = draws.integers(0, height - box_h + 1)
    x0 = draws.integers(0, width - box_w + 1)
    mask = box_mask(height, width, y0, x0, box_h, box_w)
    if fill_value is None:
        noise = random01(tf.shape(images), fold_in(seed, 1))
        fill = saturate_uint8(noise * 255.0) if images.dtype == tf.uint8 else noise
    else:
        fill = tf.cast(fill_value, images.dtype)
    return tf.where(mask, fill, images)
