"""Batch augmentations that run inside a compiled train step (tf.function, jit_compile=True, replica ctx).

Every op works on a whole NHWC batch, draws its own parameters per sample, and takes its randomness only
from `seed`, an int32/int64 tensor of shape [2] (a stateless seed; see `step_seed`). Same seed, same batch
in, same batch out, eagerly, in tf.function and under XLA.

Signatures (what `compose` and `REGISTRY` rely on):
  image op: op(images, seed, **options) -> images
  label op: op(images, labels, seed, *, num_classes, **options) -> (images, soft_labels)   (`mixes_labels`)

Dtypes and ranges: every op takes float32 images in [0, 1] and returns float32 in [0, 1], except
`normalize` (float32, zero mean / unit std per channel). uint8 [0, 255] images are also accepted and
returned as uint8 by every op except `mixup` and `mixup_or_cutmix` (float only) and `normalize`
(returns float32): flip, crop, cutout, erasing and cutmix only move or overwrite pixels; the geometric
ops blend in float32 and round back; colour ops convert to float32 [0, 1] and back.

Zero strength is the identity: prob=0 (flip, mixing ops, erasing), padding=0, max_degrees=0,
max_fraction=0, size=0, max_delta=0, max_shear=0, factors=(1, 1).

Every op keeps the image size except `random_crop_to` (crop_to), which returns a smaller window;
`eval_counterpart` says what evaluation images get instead (its centre crop). `sometimes(op, prob)`
applies any image op to each sample with probability `prob` (a spec's `prob=` on an op without one).

Why not Keras 3 preprocessing layers: they draw randomness from a SeedGenerator *variable* rather than a
seed tensor we pass, so they cannot follow the (global seed, step, replica) contract; `RandomCrop` takes
one crop window for the whole batch; and every geometric layer calls `ImageProjectiveTransformV3`, which
has no XLA kernel (tensorflow#55194), so it cannot run in a jit-compiled step or on TPU. Our geometric
ops sample with gathers instead. `tf.random.stateless_gamma` has no XLA kernel either (hence `_beta`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

# One counter-based algorithm everywhere: "auto_select" may pick different ones eagerly and under XLA.
ALG = "philox"
_uniform_raw = functools.partial(tf.random.stateless_uniform, alg=ALG)
_fold_in = functools.partial(tf.random.experimental.stateless_fold_in, alg=ALG)
_split = functools.partial(tf.random.experimental.stateless_split, alg=ALG)

__all__ = [
    "REGISTRY",
    "step_seed",
    "split_seed",
    "mixes_labels",
    "options",
    "eval_counterpart",
    "sometimes",
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

FILL_MODES = ("reflect", "symmetric", "wrap", "nearest", "constant")
INTERPOLATIONS = ("bilinear", "nearest")
_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # the ones tf.image.rgb_to_grayscale uses


# ----------------------------------------------------------------------------------------------- seeds


def step_seed(seed: int, step, replica_id=0) -> tf.Tensor:
    """Stateless seed (int32 [2]) for one step on one replica; `step` and `replica_id` may be tensors.

    Reproducible from (seed, step, replica_id), different across replicas, and a resumed run that
    restores `step` continues the same sequence. Steps are folded in modulo 2**32 (int32, as XLA on
    TPU wants int32 seeds).
    """
    seed = int(seed)
    base = tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int32)
    out = _fold_in(base, _as_int32(step))
    return _fold_in(out, _as_int32(replica_id))


def split_seed(seed, num: int) -> tf.Tensor:
    """`num` independent stateless seeds, shape [num, 2] int32."""
    return _split(_check_seed(seed), num)


def _low32(x) -> tf.Tensor:
    """The low 32 bits of an int64 tensor as int32 (two's complement)."""
    return tf.bitcast(tf.cast(tf.bitwise.bitwise_and(x, 0xFFFFFFFF), tf.uint32), tf.int32)


def _as_int32(x) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    return _low32(x) if x.dtype == tf.int64 else tf.cast(x, tf.int32)


def _check_seed(seed) -> tf.Tensor:
    """A stateless seed as int32 [2] (what XLA on TPU wants). An int64 seed [a, b] keeps all its bits in
    play: [lo(a) ^ hi(b), lo(b) ^ hi(a)], so e.g. b = step * 4096 + replica does not repeat after 2**32."""
    seed = tf.convert_to_tensor(seed)
    if (
        seed.dtype not in (tf.int32, tf.int64)
        or seed.shape.rank != 1
        or seed.shape[0] not in (2, None)
    ):
        raise TypeError(
            f"`seed` must be an int32/int64 tensor of shape [2], got {seed.dtype} {seed.shape}"
        )
    if seed.dtype == tf.int32:
        return seed
    high = tf.bitwise.right_shift(seed, 32)
    return tf.bitwise.bitwise_xor(_low32(seed), _low32(tf.reverse(high, [0])))


# ------------------------------------------------------------------------------------------ helpers


def mixes_labels(fn: Callable) -> bool:
    """Whether `fn` (possibly a functools.partial) is a label op: fn(images, labels, seed, ...)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return bool(getattr(fn, "mixes_labels", False))


def options(fn: Callable) -> tuple[str, ...]:
    """The keyword options an op takes (what a spec may set, e.g. 'padding' of crop); ops that pass
    **kwargs on to `affine_transform` take its options too."""
    import inspect

    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "num_classes"]
    if any(p.kind == p.VAR_KEYWORD for p in params):
        names += [n for n in options(affine_transform) if n not in names]
    return tuple(names)


def _label_op(fn):
    fn.mixes_labels = True
    return fn


def _check_images(images, *, float_only: bool = False) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    allowed = (tf.float32,) if float_only else (tf.float32, tf.uint8)
    if images.dtype not in allowed:
        raise TypeError(
            f"images must be {'/'.join(d.name for d in allowed)}, got {images.dtype.name}"
        )
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise ValueError(f"images must be NHWC with static H, W, C, got shape {images.shape}")
    return images


def _to_float(images):
    """(float32 [0, 1] images, function mapping a float32 [0, 1] result back to the input dtype)."""
    if images.dtype == tf.float32:
        return images, lambda y: y
    return tf.cast(images, tf.float32) / 255.0, lambda y: _saturate_uint8(y * 255.0)


def _saturate_uint8(x):
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)


def _random01(shape, seed):
    """Uniform float32 in [0, 1) on a 2**-24 grid, the same eagerly and under XLA.

    Own op: integer draws agree between TF kernels and XLA, float ones don't (different bit tricks).
    """
    return (
        tf.cast(_uniform_raw(shape, seed, minval=0, maxval=1 << 24, dtype=tf.int32), tf.float32)
        * 2.0**-24
    )


class _Draws:
    """All of an op's per-sample uniforms from one Philox call, handed out a row at a time.

    One call rather than one per parameter: each random-number expansion adds XLA compile time.
    """

    def __init__(self, seed, rows: int, batch):
        self._u = _random01(tf.stack([rows, batch]), seed)
        self._rows, self._next = rows, 0

    def take(self, k: int | None = None):
        """One row [B] (k=None) or k rows [k, B] of U[0, 1)."""
        n = 1 if k is None else k
        if self._next + n > self._rows:
            raise AssertionError("internal error: drew more rows than reserved")
        out = self._u[self._next : self._next + n]
        self._next += n
        return out[0] if k is None else out

    def uniform(self, lo, hi):
        return lo + (hi - lo) * self.take()

    def bernoulli(self, prob):
        return self.take() < prob

    def integers(self, lo: int, hi):
        """Uniform integers in [lo, hi) per sample; `hi` may be a [B] tensor."""
        span = tf.cast(hi - lo, tf.float32)
        return lo + tf.cast(tf.floor(self.take() * span), tf.int32)


def _check_prob(prob):
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"`prob` ({prob}) must be in [0, 1]")


def _check_nonnegative(**values):
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"`{name}` ({value}) must be >= 0")


def _is_pair(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def _per_sample(x):
    """[B] -> [B, 1, 1, 1] for broadcasting against NHWC."""
    return tf.reshape(x, [-1, 1, 1, 1])


def _map_index(idx, n: int, fill_mode: str):
    """Maps integer source indices (any range) into [0, n) for `fill_mode`; returns (index, in_bounds)."""
    valid = (idx >= 0) & (idx < n)
    if fill_mode == "reflect":  # d c b | a b c d | c b a (tf.pad REFLECT; numpy 'reflect')
        if n == 1:
            return tf.zeros_like(idx), valid
        m = tf.math.floormod(idx, 2 * n - 2)
        return tf.where(m >= n, 2 * n - 2 - m, m), valid
    if fill_mode == "symmetric":  # d c b a | a b c d | d c b a (tf.pad SYMMETRIC; Keras' 'reflect')
        m = tf.math.floormod(idx, 2 * n)
        return tf.where(m >= n, 2 * n - 1 - m, m), valid
    if fill_mode == "wrap":
        return tf.math.floormod(idx, n), valid
    # nearest and constant: clamp (constant masks the out-of-bounds values afterwards)
    return tf.clip_by_value(idx, 0, n - 1), valid


def _check_fill_mode(fill_mode, interpolation="nearest"):
    if fill_mode not in FILL_MODES:
        raise ValueError(f"`fill_mode` ({fill_mode!r}) must be one of {FILL_MODES}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` ({interpolation!r}) must be one of {INTERPOLATIONS}")


def _box_mask(height: int, width: int, y0, x0, box_h, box_w):
    """[B, H, W, 1] bool, True inside rows [y0, y0+box_h) x cols [x0, x0+box_w) (clipped to the image)."""
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + box_h)[:, None])
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + box_w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]


# ---------------------------------------------------------------------------------------- geometric


def random_flip_lr(images, seed, *, prob: float = 0.5):
    """Flips each image left-right with probability `prob`. Any dtype.

    Own op: tf.image.stateless_random_flip_left_right has a fixed probability of 0.5.
    """
    images, seed = _check_images(images), _check_seed(seed)
    _check_prob(prob)
    flip = _Draws(seed, 1, tf.shape(images)[0]).bernoulli(prob)
    return tf.where(_per_sample(flip), tf.reverse(images, axis=[2]), images)


def random_crop(
    images, seed, *, padding: int = 4, fill_mode: str = "reflect", fill_value: float = 0.0
):
    """Pads by `padding` pixels on each side and crops back to H x W at a per-sample random offset.

    The same as `tf.pad(mode=fill_mode)` + a random crop, done as two gathers so each sample gets its own
    window (Keras' RandomCrop takes one window per batch). `fill_mode='constant'` pads with `fill_value`
    (zero padding by default); 'reflect' is tf.pad's REFLECT. Output same dtype as input.
    """
    images, seed = _check_images(images), _check_seed(seed)
    _check_fill_mode(fill_mode)
    if padding < 0:
        raise ValueError(f"`padding` ({padding}) must be >= 0")
    _, height, width, _ = images.shape
    batch = tf.shape(images)[0]
    draws = _Draws(seed, 2, batch)
    dy = draws.integers(-padding, padding + 1)
    dx = draws.integers(-padding, padding + 1)
    rows, row_ok = _map_index(dy[:, None] + tf.range(height)[None, :], height, fill_mode)
    cols, col_ok = _map_index(dx[:, None] + tf.range(width)[None, :], width, fill_mode)
    out = tf.gather(images, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    if fill_mode == "constant":
        inside = (row_ok[:, :, None] & col_ok[:, None, :])[..., None]
        out = tf.where(inside, out, tf.cast(fill_value, out.dtype))
    return out


def _check_size(size, height: int, width: int, what: str = "image"):
    """(h, w) from an int or (h, w) `size` that fits in a height x width image."""
    h, w = (
        (size, size) if isinstance(size, int) else tuple(size) if _is_pair(size) else (None, None)
    )
    if not (isinstance(h, int) and isinstance(w, int)):
        raise ValueError(f"`size` ({size!r}) must be an int or (height, width)")
    if not (1 <= h <= height and 1 <= w <= width):
        raise ValueError(f"`size` ({size}) must be between 1 and the {height}x{width} {what}")
    return h, w


def random_crop_to(images, seed, *, size=24):
    """A `size` (int or (h, w)) window of each image at a per-sample uniform offset, fully inside: the
    batch comes out [B, h, w, C], smaller (Keras' RandomCrop, but one window per sample rather than per
    batch). Evaluation images get the centre window instead (`center_crop`, applied by the policy's
    `eval_transform`), and the model is built for h x w. Any dtype.
    """
    images, seed = _check_images(images), _check_seed(seed)
    _, height, width, _ = images.shape
    h, w = _check_size(size, height, width)
    draws = _Draws(seed, 2, tf.shape(images)[0])
    y0 = draws.integers(0, height - h + 1)
    x0 = draws.integers(0, width - w + 1)
    out = tf.gather(images, y0[:, None] + tf.range(h)[None, :], axis=1, batch_dims=1)
    return tf.gather(out, x0[:, None] + tf.range(w)[None, :], axis=2, batch_dims=1)


def center_crop(images, seed=None, *, size=24):
    """The centre `size` (int or (h, w)) window of each image, offset (H - h) // 2 as Keras' CenterCrop:
    what evaluation images get when training uses `random_crop_to`. Deterministic (`seed` ignored)."""
    del seed
    images = _check_images(images)
    _, height, width, _ = images.shape
    h, w = _check_size(size, height, width)
    y0, x0 = (height - h) // 2, (width - w) // 2
    return images[:, y0 : y0 + h, x0 : x0 + w]


random_crop_to.eval_op = center_crop


def affine_transform(
    images,
    matrices,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "reflect",
    fill_value: float = 0.0,
):
    """Resamples each image with its own affine map from output to input pixel coordinates.

    `matrices` is [B, 2, 3] (or [2, 3] for all): [x_in, y_in] = M @ [x_out, y_out, 1], pixel centres at
    integer coordinates. Own op: gathers (bilinear or nearest) compile under XLA, whereas
    ImageProjectiveTransformV3 (Keras' geometric layers, tf.raw_ops) has no XLA kernel. uint8 images are
    blended in float32 and rounded back.
    """
    images = _check_images(images)
    _check_fill_mode(fill_mode, interpolation)
    _, height, width, channels = images.shape
    batch = tf.shape(images)[0]
    m = tf.broadcast_to(tf.cast(matrices, tf.float32), tf.stack([batch, 2, 3]))
    ys, xs = tf.meshgrid(
        tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij"
    )
    grid = tf.stack(
        [tf.reshape(xs, [-1]), tf.reshape(ys, [-1]), tf.ones([height * width])]
    )  # [3, HW]
    src = tf.einsum("bij,jn->bin", m, grid)  # [B, 2, HW]
    x_in, y_in = src[:, 0], src[:, 1]
    flat = tf.reshape(images, tf.stack([batch, height * width, channels]))

    def gather(yi, xi):  # integer source coords [B, HW] -> float32 values [B, HW, C]
        yi, y_ok = _map_index(yi, height, fill_mode)
        xi, x_ok = _map_index(xi, width, fill_mode)
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
    return _saturate_uint8(out) if images.dtype == tf.uint8 else out


def _affine_matrices(height, width, angles, tx, ty, zoom, shear_x=None, shear_y=None):
    """Output->input maps: rotate counter-clockwise by `angles` (radians) and scale input coordinates by
    `zoom` about the image centre, then shift the content by (tx, ty) pixels. All [B]. `shear_x` and
    `shear_y` (radians, [B], optional) also shear about the centre: x_in += tan(shear_x) * y first, then
    y_in += tan(shear_y) * x (a shear along x slants vertical lines; along y, horizontal ones)."""
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
    """Rotates each image counter-clockwise (like tf.image.rot90) by `angles` radians, [B] or scalar."""
    images = _check_images(images)
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
    """Shears each image about its centre by `x_angles` along x (x_in = x + tan(angle) * y: vertical lines
    slant) and `y_angles` along y, radians, [B] or scalar. Deterministic; see `random_shear`."""
    images = _check_images(images)
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
    """Per-sample rotation in [-max_degrees, max_degrees], shift in [-max_fraction, max_fraction] of the
    height/width, zoom z in [1 - max_zoom, 1 + max_zoom] (input coordinates scaled by z: z < 1 zooms
    in) and shear angles in [-max_shear, max_shear] along x and [-max_shear_y, max_shear_y] along y
    (degrees, as ImageDataGenerator's shear_range, which shears along x), in one resampling. Identity
    when all are 0."""
    images, seed = _check_images(images), _check_seed(seed)
    _check_nonnegative(
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
    draws = _Draws(seed, 6 if shears else 4, batch)  # the first 4 rows as without shear
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


def random_rotation(images, seed, *, max_degrees: float = 15.0, **kwargs):
    """Per-sample rotation, uniform in [-max_degrees, max_degrees]; kwargs as `affine_transform`."""
    return random_affine(images, seed, max_degrees=max_degrees, **kwargs)


def random_translation(images, seed, *, max_fraction: float = 0.1, **kwargs):
    """Per-sample shift, uniform in [-max_fraction, max_fraction] of H (rows) and W (columns), sub-pixel
    (bilinear by default; interpolation='nearest' shifts by whole pixels)."""
    return random_affine(images, seed, max_fraction=max_fraction, **kwargs)


def random_zoom(images, seed, *, max_fraction: float = 0.1, **kwargs):
    """Per-sample zoom: input coordinates scaled by z ~ U[1 - max_fraction, 1 + max_fraction]."""
    return random_affine(images, seed, max_zoom=max_fraction, **kwargs)


def random_shear(images, seed, *, max_degrees: float = 10.0, max_degrees_y: float = 0.0, **kwargs):
    """Per-sample shear along x by an angle uniform in [-max_degrees, max_degrees] (ImageDataGenerator's
    shear_range, in degrees) and along y in [-max_degrees_y, max_degrees_y]; kwargs as `affine_transform`.
    A pure shear (x_in = x + tan(angle) * y); ImageDataGenerator's matrix also scales y by cos(angle)."""
    return random_affine(images, seed, max_shear=max_degrees, max_shear_y=max_degrees_y, **kwargs)


# --------------------------------------------------------------------------------------- occlusion


def random_cutout(
    images, seed, *, size=8, fill_value: float = 0.0, fully_inside: bool = False, prob: float = 1.0
):
    """Sets a `size` (int or (h, w)) patch of each image to `fill_value`, like tfa.image.random_cutout.

    With fully_inside=False (tfa's and the Cutout paper's behaviour) the patch centre is uniform over the
    image and the patch is clipped at the border, so between ceil(h/2)*ceil(w/2) and h*w pixels are set;
    fully_inside=True places the whole patch inside (exactly h*w pixels). `fill_value` is in the images'
    own scale. Any dtype. Own op: tfa is gone and Keras has no cutout.
    """
    images, seed = _check_images(images), _check_seed(seed)
    _check_prob(prob)
    _, height, width, _ = images.shape
    box_h, box_w = (
        (size, size) if isinstance(size, int) else tuple(size) if _is_pair(size) else (None, None)
    )
    if not (isinstance(box_h, int) and isinstance(box_w, int)):
        raise ValueError(f"`size` ({size!r}) must be an int or (height, width)")
    if not (0 <= box_h <= height and 0 <= box_w <= width):
        raise ValueError(f"`size` ({size}) must fit in the {height}x{width} image")
    batch = tf.shape(images)[0]
    draws = _Draws(seed, 3, batch)
    if fully_inside:
        y0 = draws.integers(0, height - box_h + 1)
        x0 = draws.integers(0, width - box_w + 1)
    else:
        y0 = draws.integers(0, height) - box_h // 2
        x0 = draws.integers(0, width) - box_w // 2
    apply = tf.cast(draws.bernoulli(prob), tf.int32)
    mask = _box_mask(height, width, y0, x0, box_h * apply, box_w * apply)
    return tf.where(mask, tf.cast(fill_value, images.dtype), images)


def random_erasing(
    images,
    seed,
    *,
    prob: float = 0.5,
    area=(0.02, 0.33),
    aspect=(0.3, 3.3),
    fill_value: float | None = None,
):
    """Random erasing (Zhong et al. 2017): with probability `prob`, a box of random area fraction (uniform
    in `area`) and aspect ratio (log-uniform in `aspect`), fully inside the image, is filled with uniform
    noise (fill_value=None) or `fill_value` (images' own scale). Any dtype."""
    images, seed = _check_images(images), _check_seed(seed)
    _check_prob(prob)
    _, height, width, channels = images.shape
    batch = tf.shape(images)[0]
    draws = _Draws(seed, 5, batch)
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
    mask = _box_mask(height, width, y0, x0, box_h, box_w)
    if fill_value is None:
        noise = _random01(tf.shape(images), _fold_in(seed, 1))
        fill = _saturate_uint8(noise * 255.0) if images.dtype == tf.uint8 else noise
    else:
        fill = tf.cast(fill_value, images.dtype)
    return tf.where(mask, fill, images)


# ------------------------------------------------------------------------------------------- colour
# Own ops: tf.image.adjust_* / stateless_random_* take one factor for the whole batch.


def random_brightness(images, seed, *, max_delta: float = 0.2):
    """Adds delta ~ U[-max_delta, max_delta] per sample (as tf.image.adjust_brightness), clips to [0, 1]."""
    images, seed = _check_images(images), _check_seed(seed)
    _check_nonnegative(max_delta=max_delta)
    x, back = _to_float(images)
    delta = _Draws(seed, 1, tf.shape(x)[0]).uniform(-max_delta, max_delta)
    return back(tf.clip_by_value(x + _per_sample(delta), 0.0, 1.0))


def random_brightness_scale(images, seed, *, factors=(0.8, 1.2)):
    """Multiplies each image by f ~ U[factors[0], factors[1]] per sample, clips to [0, 1]: Keras'
    ImageDataGenerator(brightness_range=factors) (PIL's ImageEnhance.Brightness is this product);
    `random_brightness` adds instead."""
    images, seed = _check_images(images), _check_seed(seed)
    if not (_is_pair(factors) and 0.0 <= factors[0] <= factors[1]):
        raise ValueError(f"`factors` ({factors!r}) must be (low, high) with 0 <= low <= high")
    x, back = _to_float(images)
    factor = _Draws(seed, 1, tf.shape(x)[0]).uniform(float(factors[0]), float(factors[1]))
    return back(tf.clip_by_value(x * _per_sample(factor), 0.0, 1.0))


def random_contrast(images, seed, *, max_delta: float = 0.2):
    """Scales each channel's deviation from its image mean by f ~ U[1 - max_delta, 1 + max_delta] per
    sample (as tf.image.adjust_contrast), clips to [0, 1]."""
    images, seed = _check_images(images), _check_seed(seed)
    _check_nonnegative(max_delta=max_delta)
    x, back = _to_float(images)
    factor = _per_sample(_Draws(seed, 1, tf.shape(x)[0]).uniform(1.0 - max_delta, 1.0 + max_delta))
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    return back(tf.clip_by_value((x - mean) * factor + mean, 0.0, 1.0))


def random_saturation(images, seed, *, max_delta: float = 0.2):
    """Blends each RGB image with its grayscale by f ~ U[1 - max_delta, 1 + max_delta] per sample
    (f=0 gray, f>1 more saturated; torchvision's definition), clips to [0, 1]. No-op unless C == 3."""
    images, seed = _check_images(images), _check_seed(seed)
    _check_nonnegative(max_delta=max_delta)
    if images.shape[-1] != 3:
        return images
    x, back = _to_float(images)
    factor = _per_sample(_Draws(seed, 1, tf.shape(x)[0]).uniform(1.0 - max_delta, 1.0 + max_delta))
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


def random_hue(images, seed, *, max_delta: float = 0.05):
    """Rotates hue by delta ~ U[-max_delta, max_delta] turns per sample (positive: red towards green),
    as a rotation of the chroma plane of YIQ (like DALI's Hue or CSS hue-rotate; close to, not equal to,
    tf.image.adjust_hue's HSV shift), then clips to [0, 1]. No-op unless C == 3.

    Own op: besides the one-delta-per-batch limit, the HSV round trip picks the hue formula by testing
    `channel == max(channels)`, which XLA can break when it fuses it after other arithmetic (seen on CPU
    after a bilinear resample: 7% of pixels got another hue); a 3x3 matrix per sample has no such test.
    """
    images, seed = _check_images(images), _check_seed(seed)
    if not 0.0 <= max_delta <= 0.5:
        raise ValueError(f"`max_delta` ({max_delta}) must be in [0, 0.5]")
    if images.shape[-1] != 3:
        return images
    x, back = _to_float(images)
    turns = _Draws(seed, 1, tf.shape(x)[0]).uniform(-max_delta, max_delta)
    rgb = tf.einsum("bhwc,bdc->bhwd", x, _hue_matrices(turns))
    return back(tf.clip_by_value(rgb, 0.0, 1.0))


def normalize(
    images, seed=None, *, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5
):
    """(x - mean) / std per channel, x in [0, 1] (uint8 is divided by 255 first). Returns float32, no
    longer in [0, 1], so put it last. Deterministic: `seed` is ignored (accepted so it composes)."""
    del seed
    x, _ = _to_float(_check_images(images))
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (x - mean) / std


# ----------------------------------------------------------------------------------- label mixing


def _soft_labels(labels, num_classes: int) -> tf.Tensor:
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_integer:
        return tf.one_hot(labels, num_classes, dtype=tf.float32)
    if labels.shape.rank != 2 or labels.shape[-1] not in (num_classes, None):
        raise ValueError(f"soft labels must be [B, {num_classes}], got {labels.shape}")
    return tf.cast(labels, tf.float32)


def _partners(draws):
    """A random single cycle over the batch: no sample is paired with itself (unless B == 1)."""
    perm = tf.argsort(draws.take())
    return tf.gather(tf.roll(perm, -1, axis=0), tf.argsort(perm))


_TRIES = 8  # Marsaglia-Tsang proposals per sample; each is accepted with probability > 0.95
_GAMMA_ROWS = 3 * _TRIES + 1
_BETA_ROWS = 2 * _GAMMA_ROWS


def _gamma_log(u, alpha: float):
    """log of Gamma(alpha, 1) samples [B] from uniforms u [_GAMMA_ROWS, B] (Marsaglia-Tsang, vectorised
    over `_TRIES` proposals; all fail with probability below 0.05**8, then we return the mode's log).
    Own op: tf.random.stateless_gamma has no XLA kernel."""
    a = alpha + 1.0 if alpha < 1.0 else alpha  # Gamma(a) = Gamma(a + 1) * U**(1/a) for a < 1
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    u1, u2, u3 = (
        1.0 - u[:_TRIES],
        u[_TRIES : 2 * _TRIES],
        1.0 - u[2 * _TRIES : 3 * _TRIES],
    )  # 1 - u: (0, 1]
    z = tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * math.pi * u2)  # Box-Muller
    v = (1.0 + c * z) ** 3
    log_v = tf.math.log(tf.maximum(v, 1e-30))
    accept = (v > 0) & (tf.math.log(u3) < 0.5 * z * z + d - d * v + d * log_v)
    first = tf.argmax(tf.cast(accept, tf.int32), axis=0, output_type=tf.int32)
    log_g = tf.gather(tf.transpose(log_v), first[:, None], batch_dims=1)[:, 0] + math.log(d)
    log_g = tf.where(tf.reduce_any(accept, axis=0), log_g, math.log(d))
    if alpha < 1.0:
        log_g += tf.math.log(1.0 - u[3 * _TRIES]) / alpha
    return log_g


def _beta(draws, alpha: float):
    """Symmetric Beta(alpha, alpha) per sample as X / (X + Y), in log space so tiny alphas don't 0/0."""
    if alpha <= 0:
        raise ValueError(f"`alpha` ({alpha}) must be > 0")
    u = draws.take(_BETA_ROWS)
    return tf.sigmoid(_gamma_log(u[:_GAMMA_ROWS], alpha) - _gamma_log(u[_GAMMA_ROWS:], alpha))


def _cut_boxes(draws, height, width, alpha):
    """CutMix boxes: side ratio sqrt(1 - lam), lam ~ Beta(alpha, alpha), centre uniform, clipped.
    Returns [B, H, W, 1] bool, True where the partner's pixels go. Uses 2 + _BETA_ROWS rows."""
    ratio = tf.sqrt(1.0 - _beta(draws, alpha))
    box_h = tf.cast(ratio * height, tf.int32)
    box_w = tf.cast(ratio * width, tf.int32)
    cy = draws.integers(0, height)
    cx = draws.integers(0, width)
    return _box_mask(height, width, cy - box_h // 2, cx - box_w // 2, box_h, box_w)


def _mix(images, soft, partner, own_weight):
    """out = w * x + (1 - w) * x[partner] per pixel (w [B, H, W, 1] in [0, 1]); labels mixed by mean(w),
    which is exactly lambda for mixup and the kept area fraction for cutmix."""
    lam = tf.reduce_mean(own_weight, axis=[1, 2, 3])[:, None]
    mixed_labels = lam * soft + (1.0 - lam) * tf.gather(soft, partner)
    other = tf.gather(images, partner)
    if images.dtype == tf.uint8:  # only reached by cutmix, whose weights are 0 or 1
        return tf.where(own_weight > 0.5, images, other), mixed_labels
    return own_weight * images + (1.0 - own_weight) * other, mixed_labels


@_label_op
def mixup(images, labels, seed, *, num_classes: int, alpha: float = 0.2, prob: float = 1.0):
    """Mixup (Zhang et al. 2018): x = lam x_i + (1 - lam) x_j with lam ~ Beta(alpha, alpha) per sample and
    j a random other sample; labels (int [B] or soft [B, K]) mixed alike -> float32 [B, K]. Samples not
    picked (1 - prob) keep lam = 1. float32 only.

    Own op: keras.layers.MixUp/CutMix draw from a SeedGenerator variable and sample Beta through
    tf.random.stateless_gamma (no XLA kernel)."""
    images, seed = _check_images(images, float_only=True), _check_seed(seed)
    _check_prob(prob)
    soft = _soft_labels(labels, num_classes)
    batch = tf.shape(images)[0]
    draws = _Draws(seed, 2 + _BETA_ROWS, batch)
    partners = _partners(draws)
    lam = tf.where(draws.bernoulli(prob), _beta(draws, alpha), 1.0)
    weight = tf.broadcast_to(_per_sample(lam), tf.concat([tf.shape(images)[:3], [1]], 0))
    return _mix(images, soft, partners, weight)


@_label_op
def cutmix(images, labels, seed, *, num_classes: int, alpha: float = 1.0, prob: float = 1.0):
    """CutMix (Yun et al. 2019): pastes a box from a random other sample; box side sqrt(1 - lam) of the
    image, lam ~ Beta(alpha, alpha), centre uniform, clipped at the border. The label weight of the pasted
    sample is exactly the pasted area fraction. Returns float32 [B, K] labels. Any dtype."""
    images, seed = _check_images(images), _check_seed(seed)
    _check_prob(prob)
    soft = _soft_labels(labels, num_classes)
    _, height, width, _ = images.shape
    batch = tf.shape(images)[0]
    draws = _Draws(seed, 4 + _BETA_ROWS, batch)
    partners = _partners(draws)
    pasted = _cut_boxes(draws, height, width, alpha) & _per_sample(draws.bernoulli(prob))
    return _mix(images, soft, partners, tf.cast(~pasted, tf.float32))


@_label_op
def mixup_or_cutmix(
    images,
    labels,
    seed,
    *,
    num_classes: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    cutmix_prob: float = 0.5,
    prob: float = 1.0,
):
    """Per sample, cutmix with probability `cutmix_prob`, otherwise mixup (timm's defaults), each against
    a random other sample. float32 only; returns float32 [B, K] labels."""
    images, seed = _check_images(images, float_only=True), _check_seed(seed)
    _check_prob(prob)
    _check_prob(cutmix_prob)
    soft = _soft_labels(labels, num_classes)
    _, height, width, _ = images.shape
    batch = tf.shape(images)[0]
    draws = _Draws(seed, 5 + 2 * _BETA_ROWS, batch)
    partners = _partners(draws)
    lam = _per_sample(_beta(draws, mixup_alpha))
    kept = tf.cast(~_cut_boxes(draws, height, width, cutmix_alpha), tf.float32)
    use_cut = _per_sample(draws.bernoulli(cutmix_prob))
    weight = tf.where(use_cut, kept, lam)
    weight = tf.where(_per_sample(draws.bernoulli(prob)), weight, 1.0)
    return _mix(images, soft, partners, weight)


# ------------------------------------------------------------------------------- any op, sometimes


def _base_and_keywords(fn):
    keywords = {}
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    return fn, keywords


def eval_counterpart(fn: Callable) -> Callable | None:
    """What evaluation images get for a training op that changes their size, `images -> images`
    (random_crop_to: the centre crop of the same size); None for ops that keep the size."""
    base, keywords = _base_and_keywords(fn)
    if base is sometimes:
        return eval_counterpart(keywords["op"])
    counterpart = getattr(base, "eval_op", None)
    if counterpart is None:
        return None
    return functools.partial(
        counterpart, **{k: v for k, v in keywords.items() if k in options(counterpart)}
    )


def sometimes(images, seed, *, op: Callable, prob: float):
    """Image op `op(images, seed)` on each sample with probability `prob` (a per-sample mask, like
    albumentations' p=); the other samples stay as they are, or get the op's `eval_counterpart` when it
    changes the size (crop_to: the centre crop). `op` draws from `seed` exactly as it would alone."""
    images, seed = _check_images(images), _check_seed(seed)
    _check_prob(prob)
    if mixes_labels(op):
        raise ValueError("a label-mixing op takes `prob` itself")
    keep = eval_counterpart(op)
    if prob == 0.0:
        return images if keep is None else keep(images)
    out = op(images, seed)
    if prob == 1.0:
        return out
    apply = _Draws(_fold_in(seed, 0x5EED), 1, tf.shape(images)[0]).bernoulli(prob)
    return tf.where(_per_sample(apply), out, images if keep is None else keep(images))


# ------------------------------------------------------------------------------------------ registry

REGISTRY: dict[str, Callable] = {
    "flip": random_flip_lr,
    "crop": random_crop,
    "crop_to": random_crop_to,
    "rotate": random_rotation,
    "translate": random_translation,
    "zoom": random_zoom,
    "shear": random_shear,
    "affine": random_affine,
    "cutout": random_cutout,
    "erase": random_erasing,
    "brightness": random_brightness,
    "brightness_scale": random_brightness_scale,
    "contrast": random_contrast,
    "saturation": random_saturation,
    "hue": random_hue,
    "normalize": normalize,
    "mixup": mixup,
    "cutmix": cutmix,
    "mixup_or_cutmix": mixup_or_cutmix,
}
