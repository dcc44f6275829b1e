"""Geometric ops: flip, crops, and per-sample affine resampling (rotate, translate, zoom, shear).

Own ops rather than Keras 3 preprocessing layers: those draw randomness from a SeedGenerator
*variable* rather than a seed tensor we pass, so they cannot follow the (run seed, step, replica)
contract; `RandomCrop` takes one crop window for the whole batch; and every geometric layer calls
`ImageProjectiveTransformV3`, which has no XLA kernel (tensorflow#55194), so it cannot run in a
jit-compiled step or on TPU. These sample with gathers instead. uint8 images are blended in float32
and rounded back. Every op keeps the image size except `random_crop_to` (crop_to), which returns a
smaller window; evaluation images get its centre crop (`center_crop`).
"""

from __future__ import annotations

import math

import tensorflow as tf

from augment.ops.core import (
    OPS,
    Draws,
    check_fill_mode,
    check_images,
    check_nonnegative,
    check_prob,
    check_seed,
    is_pair,
    map_index,
    per_sample,
    saturate_uint8,
)

# The options of `affine_transform`, which the ops built on `random_affine` pass on via **kwargs.
_RESAMPLING = ("interpolation", "fill_mode", "fill_value")


@OPS.register("flip", xla=True)
def random_flip_lr(images, seed, *, prob: float = 0.5):
    """Flips each image left-right with probability `prob`. Any dtype.

    Own op: tf.image.stateless_random_flip_left_right has a fixed probability of 0.5.
    """
    images, seed = check_images(images), check_seed(seed)
    check_prob(prob)
    flip = Draws(seed, 1, tf.shape(images)[0]).bernoulli(prob)
    return tf.where(per_sample(flip), tf.reverse(images, axis=[2]), images)


@OPS.register("crop", xla=True)
def random_crop(
    images, seed, *, padding: int = 4, fill_mode: str = "reflect", fill_value: float = 0.0
):
    """Pads by `padding` pixels on each side and crops back to H x W at a per-sample random offset.

    The same as `tf.pad(mode=fill_mode)` + a random crop, done as two gathers so each sample gets
    its own window (Keras' RandomCrop takes one window per batch). `fill_mode='constant'` pads with
    `fill_value` (zero padding by default); 'reflect' is tf.pad's REFLECT. Output same dtype as
    input.
    """
    images, seed = check_images(images), check_seed(seed)
    check_fill_mode(fill_mode)
    if padding < 0:
        raise ValueError(f"`padding` ({padding}) must be >= 0")
    _, height, width, _ = images.shape
    batch = tf.shape(images)[0]
    draws = Draws(seed, 2, batch)
    dy = draws.integers(-padding, padding + 1)
    dx = draws.integers(-padding, padding + 1)
    rows, row_ok = map_index(dy[:, None] + tf.range(height)[None, :], height, fill_mode)
    cols, col_ok = map_index(dx[:, None] + tf.range(width)[None, :], width, fill_mode)
    out = tf.gather(images, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    if fill_mode == "constant":
        inside = (row_ok[:, :, None] & col_ok[:, None, :])[..., None]
        out = tf.where(inside, out, tf.cast(fill_value, out.dtype))
    return out


def check_size(size, height: int, width: int, what: str = "image"):
    """(h, w) from an int or (h, w) `size` that fits in a height x width image."""
    h, w = (size, size) if isinstance(size, int) else tuple(size) if is_pair(size) else (None, None)
    if not (isinstance(h, int) and isinstance(w, int)):
        raise ValueError(f"`size` ({size!r}) must be an int or (height, width)")
    if not (1 <= h <= height and 1 <= w <= width):
        raise ValueError(f"`size` ({size}) must be between 1 and the {height}x{width} {what}")
    return h, w


def center_crop(images, seed=None, *, size=24):
    """The centre `size` (int or (h, w)) window of each image, offset (H - h) // 2 as Keras'
    CenterCrop: what evaluation images get when training uses `random_crop_to`. Deterministic
    (`seed` ignored)."""
    del seed
    images = check_images(images)
    _, height, width, _ = images.shape
    h, w = check_size(size, height, width)
    y0, x0 = (height - h) // 2, (width - w) // 2
    return images[:, y0 : y0 + h, x0 : x0 + w]


@OPS.register("crop_to", xla=True, eval_op=center_crop)
def random_crop_to(images, seed, *, size=24):
    """A `size` (int or (h, w)) window of each image at a per-sample uniform offset, fully inside:
    the batch comes out [B, h, w, C], smaller (Keras' RandomCrop, but one window per sample rather
    than per batch). Evaluation images get the centre window instead (`center_crop`, applied by the
    policy's `eval_transform`), and the model is built for h x w. Any dtype.
    """
    images, seed = check_images(images), check_seed(seed)
    _, height, width, _ = images.shape
    h, w = check_size(size, height, width)
    draws = Draws(seed, 2, tf.shape(images)[0])
    y0 = draws.integers(0, height - h + 1)
    x0 = draws.integers(0, width - w + 1)
    out = tf.gather(images, y0[:, None] + tf.range(h)[None, :], axis=1, batch_dims=1)
    return tf.gather(out, x0[:, None] + tf.range(w)[None, :], axis=2, batch_dims=1)


def affine_transform(
    images,
    matrices,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
):
    """Resamples each image with its own affine map from output to input pixel coordinates.

    `matrices` is [B, 2, 3] (or [2, 3] for all): [x_in, y_in] = M @ [x_out, y_out, 1], pixel centres
    at integer coordinates. Own op: gathers (bilinear or nearest) compile under XLA, whereas
    ImageProjectiveTransformV3 (Keras' geometric layers, tf.raw_ops) has no XLA kernel. uint8 images
    are blended in float32 and rounded back.
    """
    images = check_images(images)
    check_fill_mode(fill_mode, interpolation)
    _, height, width, channels = images.shape
    batch = tf.shape(images)[0]
    m = tf.broadcast_to(tf.cast(matrices, tf.float32), tf.stack([batch, 2, 3]))
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    ones = tf.ones([height * width])
    grid = tf.stack([tf.reshape(xs, [-1]), tf.reshape(ys, [-1]), ones])  # [3, HW]
    src = tf.einsum("bij,jn->bin", m, grid)  # [B, 2, HW]
    x_in, y_in = src[:, 0], src[:, 1]
    flat = tf.reshape(images, tf.stack([batch, height * width, channels]))

    def gather(yi, xi):  # integer source coords [B, HW] -> float32 values [B, HW, C]
        yi, y_ok = map_index(yi, height, fill_mode)
        xi, x_ok = map_index(xi, width, fill_mode)
        values = tf.cast(tf.gather(flat, yi * width + xi, batch_dims=1), tf.float32)
        if fill_mode == "constant":
            values = tf.where((y_ok & x_ok)[..., None], values, tf.cast(fill_value, tf.float32))
        return values

    if interpolation == "nearest":
        out = gather(
            tf.cast(tf.floor(y_in + 0.5), tf.int32), tf.cast(tf.floor(x_in + 0.5), tf.int32)
        )
    else:
        y0, x0 = tf.floor(y_in), tf.floor(x_in)
        wy, wx = (y_in - y0)[..., None], (x_in - x0)[..., None]
        y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
        top = (1.0 - wx) * gather(y0, x0) + wx * gather(y0, x0 + 1)
        bottom = (1.0 - wx) * gather(y0 + 1, x0) + wx * gather(y0 + 1, x0 + 1)
        out = (1.0 - wy) * top + wy * bottom
    out = tf.reshape(out, tf.stack([batch, height, width, channels]))
    return saturate_uint8(out) if images.dtype == tf.uint8 else out


def _affine_matrices(height, width, angles, tx, ty, zoom, shear_x=None, shear_y=None):
    """Output->input maps: rotate counter-clockwise by `angles` (radians) and scale input
    coordinates by `zoom` about the image centre, then shift the content by (tx, ty) pixels. All
    [B]. `shear_x` and `shear_y` (radians, [B], optional) also shear about the centre: x_in +=
    tan(shear_x) * y first, then y_in += tan(shear_y) * x (a shear along x slants vertical lines;
    along y, horizontal ones)."""
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    cos, sin = tf.cos(angles) * zoom, tf.sin(angles) * zoom
    # input = zoom * R(angle) @ S @ (output - centre - t) + centre, with y pointing down
    a, b, c, d = cos, -sin, sin, cos
    if shear_x is not None or shear_y is not None:
        kx = tf.tan(shear_x) if shear_x is not None else tf.zeros_like(angles)
        ky = tf.tan(shear_y) if shear_y is not None else tf.zeros_like(angles)
        # S = [[1, kx], [0, 1]] @ [[1, 0], [ky, 1]] = [[1 + kx ky, kx], [ky, 1]]
        s00, s01 = 1.0 + kx * ky, kx
        a, b, c, d = cos * s00 - sin * ky, cos * s01 - sin, sin * s00 + cos * ky, sin * s01 + cos
    u0, v0 = -cx - tx, -cy - ty
    row_x = tf.stack([a, b, a * u0 + b * v0 + cx], axis=-1)
    row_y = tf.stack([c, d, c * u0 + d * v0 + cy], axis=-1)
    return tf.stack([row_x, row_y], axis=1)


def rotate(
    images,
    angles,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
):
    """Rotates each image counter-clockwise (like tf.image.rot90) by `angles` radians, [B] or
    scalar."""
    images = check_images(images)
    batch = tf.shape(images)[0]
    angles = tf.broadcast_to(tf.cast(angles, tf.float32), [batch])
    zeros = tf.zeros([batch])
    m = _affine_matrices(images.shape[1], images.shape[2], angles, zeros, zeros, tf.ones([batch]))
    return affine_transform(
        images, m, interpolation=interpolation, fill_mode=fill_mode, fill_value=fill_value
    )


def shear(
    images,
    x_angles,
    y_angles=0.0,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
):
    """Shears each image about its centre by `x_angles` along x (x_in = x + tan(angle) * y: vertical
    lines slant) and `y_angles` along y, radians, [B] or scalar. Deterministic; see
    `random_shear`."""
    images = check_images(images)
    batch = tf.shape(images)[0]
    x_angles = tf.broadcast_to(tf.cast(x_angles, tf.float32), [batch])
    y_angles = tf.broadcast_to(tf.cast(y_angles, tf.float32), [batch])
    zeros = tf.zeros([batch])
    m = _affine_matrices(
        images.shape[1], images.shape[2], zeros, zeros, zeros, tf.ones([batch]), x_angles, y_angles
    )
    return affine_transform(
        images, m, interpolation=interpolation, fill_mode=fill_mode, fill_value=fill_value
    )


@OPS.register("affine", xla=True)
def random_affine(
    images,
    seed,
    *,
    max_degrees: float = 0.0,
    max_fraction: float = 0.0,
    max_zoom: float = 0.0,
    max_shear: float = 0.0,
    max_shear_y: float = 0.0,
    interpolation: str = "bilinear",
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
):
    """Per-sample rotation in [-max_degrees, max_degrees], shift in [-max_fraction, max_fraction] of
    the height/width, zoom z in [1 - max_zoom, 1 + max_zoom] (input coordinates scaled by z: z < 1
    zooms in) and shear angles in [-max_shear, max_shear] along x and [-max_shear_y, max_shear_y]
    along y (degrees, as ImageDataGenerator's shear_range, which shears along x), in one resampling.
    Identity when all are 0."""
    images, seed = check_images(images), check_seed(seed)
    check_nonnegative(
        max_degrees=max_degrees,
        max_fraction=max_fraction,
        max_zoom=max_zoom,
        max_shear=max_shear,
        max_shear_y=max_shear_y,
    )
    for name, value in (("max_shear", max_shear), ("max_shear_y", max_shear_y)):
        if value >= 90.0:
            raise ValueError(f"`{name}` ({value}) must be below 90 degrees")
    _, height, width, _ = images.shape
    batch = tf.shape(images)[0]
    shears = bool(max_shear or max_shear_y)
    draws = Draws(seed, 6 if shears else 4, batch)  # the first 4 rows as without shear
    rad = math.radians(max_degrees)
    angles = draws.uniform(-rad, rad)
    tx = draws.uniform(-max_fraction, max_fraction) * width
    ty = draws.uniform(-max_fraction, max_fraction) * height
    zoom = draws.uniform(1.0 - max_zoom, 1.0 + max_zoom)
    shear_x = shear_y = None
    if shears:
        shear_x = draws.uniform(-math.radians(max_shear), math.radians(max_shear))
        shear_y = draws.uniform(-math.radians(max_shear_y), math.radians(max_shear_y))
    m = _affine_matrices(height, width, angles, tx, ty, zoom, shear_x, shear_y)
    return affine_transform(
        images, m, interpolation=interpolation, fill_mode=fill_mode, fill_value=fill_value
    )


@OPS.register("rotate", xla=True, more_options=_RESAMPLING)
def random_rotation(images, seed, *, max_degrees: float = 15.0, **kwargs):
    """Per-sample rotation, uniform in [-max_degrees, max_degrees]; kwargs as `affine_transform`."""
    return random_affine(images, seed, max_degrees=max_degrees, **kwargs)


@OPS.register("translate", xla=True, more_options=_RESAMPLING)
def random_translation(images, seed, *, max_fraction: float = 0.1, **kwargs):
    """Per-sample shift, uniform in [-max_fraction, max_fraction] of H (rows) and W (columns),
    sub-pixel (bilinear by default; interpolation='nearest' shifts by whole pixels)."""
    return random_affine(images, seed, max_fraction=max_fraction, **kwargs)


@OPS.register("zoom", xla=True, more_options=_RESAMPLING)
def random_zoom(images, seed, *, max_fraction: float = 0.1, **kwargs):
    """Per-sample zoom: input coordinates scaled by z ~ U[1 - max_fraction, 1 + max_fraction]."""
    return random_affine(images, seed, max_zoom=max_fraction, **kwargs)


@OPS.register("shear", xla=True, more_options=_RESAMPLING)
def random_shear(images, seed, *, max_degrees: float = 10.0, max_degrees_y: float = 0.0, **kwargs):
    """Per-sample shear along x by an angle uniform in [-max_degrees, max_degrees]
    (ImageDataGenerator's shear_range, in degrees) and along y in [-max_degrees_y, max_degrees_y];
    kwargs as `affine_transform`. A pure shear (x_in = x + tan(angle) * y); ImageDataGenerator's
    matrix also scales y by cos(angle)."""
    return random_affine(images, seed, max_shear=max_degrees, max_shear_y=max_degrees_y, **kwargs)
