"""The ops' common ground: the registry `OPS`, seeds, checks, per-sample draws, `sometimes`.

Every op works on a whole NHWC batch, draws its own parameters per sample, and takes its randomness
only from `seed`, an int32/int64 tensor of shape [2] (a stateless seed; see framework.seeds). Same
seed, same batch in, same batch out, eagerly, in tf.function and under XLA.

An op registers itself in its own module, with what a policy needs to know about it:

    @OPS.register("flip", xla=True)
    def random_flip_lr(images, seed, *, prob: float = 0.5): ...

    xla=True           it compiles with XLA (tested eagerly, in tf.function and with
                       jit_compile=True): a policy of such ops runs as one XLA cluster; any other op
                       runs uncompiled.
    mixes_labels=True  a label op: op(images, labels, seed, *, num_classes, **options)
                       -> (images, soft_labels); an image op is op(images, seed, **options) ->
                       images.
    eval_op=fn         the op changes the image size; evaluation images get fn (crop_to:
                       center_crop).
    more_options=(..)  options it passes on through **kwargs (to `affine_transform`).

Its keyword-only arguments are the options a spec may set ("crop:padding=4").
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import tensorflow as tf

from framework.registry import Entry, Registry
from framework.seeds import ALG, fold_in, low32

OPS = Registry("augmentation op", package="augment.ops", flag="augment")

_uniform_raw = functools.partial(tf.random.stateless_uniform, alg=ALG)
_split = functools.partial(tf.random.experimental.stateless_split, alg=ALG)

FILL_MODES = ("reflect", "symmetric", "wrap", "nearest", "constant")
INTERPOLATIONS = ("bilinear", "nearest")


# ------------------------------------------------------------------------------------ registered
# ops


def entry_of(fn: Callable) -> Entry | None:
    """The registry entry of `fn` (a registered function itself, not a partial of it), or None."""
    return next((e for e in OPS.entries() if e.fn is fn), None)


def base_and_keywords(fn):
    """(the function under any functools.partials, their keywords merged)."""
    keywords = {}
    while isinstance(fn, functools.partial):
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    return fn, keywords


def mixes_labels(fn: Callable) -> bool:
    """Whether `fn` (possibly a functools.partial) is a label op: fn(images, labels, seed, ...):
    registered with mixes_labels=True, or a callable of your own with `fn.mixes_labels = True`."""
    base, _ = base_and_keywords(fn)
    entry = entry_of(base)
    return bool(entry.get("mixes_labels") if entry else getattr(base, "mixes_labels", False))


def compiles(fn: Callable) -> bool:
    """Whether `fn` (an op, a partial of one, or `sometimes` of one) is registered with xla=True,
    and so is every op it takes as an option."""
    base, keywords = base_and_keywords(fn)
    inner = [v for v in keywords.values() if callable(v)]
    entry = entry_of(base)
    own = base is sometimes or bool(entry and entry.get("xla"))
    return own and all(compiles(v) for v in inner)


def options(fn: Callable) -> tuple[str, ...]:
    """The keyword options an op takes (what a spec may set, e.g. 'padding' of crop), with the
    `more_options` it declared for what it passes on through **kwargs."""
    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "num_classes"]
    entry = entry_of(fn)
    names += [n for n in (entry.get("more_options", ()) if entry else ()) if n not in names]
    return tuple(names)


# ------------------------------------------------------------------------------------------- seeds


def split_seed(seed, num: int) -> tf.Tensor:
    """`num` independent stateless seeds, shape [num, 2] int32."""
    return _split(check_seed(seed), num)


def check_seed(seed) -> tf.Tensor:
    """A stateless seed as int32 [2] (what XLA on TPU wants). An int64 seed [a, b] keeps all its
    bits in play: [lo(a) ^ hi(b), lo(b) ^ hi(a)], so e.g. b = step * 4096 + replica does not repeat
    after 2**32."""
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
    return tf.bitwise.bitwise_xor(low32(seed), low32(tf.reverse(high, [0])))


# ------------------------------------------------------------------------------------------ helpers


def check_images(images, *, float_only: bool = False) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    allowed = (tf.float32,) if float_only else (tf.float32, tf.uint8)
    if images.dtype not in allowed:
        raise TypeError(
            f"images must be {'/'.join(d.name for d in allowed)}, got {images.dtype.name}"
        )
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise ValueError(f"images must be NHWC with static H, W, C, got shape {images.shape}")
    return images


def to_float(images):
    """(float32 [0, 1] images, function mapping a float32 [0, 1] result back to the input dtype)."""
    if images.dtype == tf.float32:
        return images, lambda y: y
    return tf.cast(images, tf.float32) / 255.0, lambda y: saturate_uint8(y * 255.0)


def saturate_uint8(x):
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)


def random01(shape, seed):
    """Uniform float32 in [0, 1) on a 2**-24 grid, the same eagerly and under XLA.

    Own op: integer draws agree between TF kernels and XLA, float ones don't (different bit tricks).
    """
    return (
        tf.cast(_uniform_raw(shape, seed, minval=0, maxval=1 << 24, dtype=tf.int32), tf.float32)
        * 2.0**-24
    )


class Draws:
    """All of an op's per-sample uniforms from one Philox call, handed out a row at a time.

    One call rather than one per parameter: each random-number expansion adds XLA compile time.
    """

    def __init__(self, seed, rows: int, batch):
        self._u = random01(tf.stack([rows, batch]), seed)
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


def check_prob(prob):
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"`prob` ({prob}) must be in [0, 1]")


def check_nonnegative(**values):
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"`{name}` ({value}) must be >= 0")


def is_pair(value) -> bool:
    return isinstance(value, (tuple, list)) and len(value) == 2


def per_sample(x):
    """[B] -> [B, 1, 1, 1] for broadcasting against NHWC."""
    return tf.reshape(x, [-1, 1, 1, 1])


def map_index(idx, n: int, fill_mode: str):
    """Maps integer source indices (any range) into [0, n) for `fill_mode`; returns (index,
    in_bounds)."""
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


def check_fill_mode(fill_mode, interpolation="nearest"):
    if fill_mode not in FILL_MODES:
        raise ValueError(f"`fill_mode` ({fill_mode!r}) must be one of {FILL_MODES}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` ({interpolation!r}) must be one of {INTERPOLATIONS}")


def box_mask(height: int, width: int, y0, x0, box_h, box_w):
    """[B, H, W, 1] bool, True inside rows [y0, y0+box_h) x cols [x0, x0+box_w) (clipped to the
    image)."""
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + box_h)[:, None])
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + box_w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]


# ------------------------------------------------------------------------------- any op, sometimes


def eval_counterpart(fn: Callable) -> Callable | None:
    """What evaluation images get for a training op that changes their size, `images -> images`
    (random_crop_to: the centre crop of the same size); None for ops that keep the size."""
    base, keywords = base_and_keywords(fn)
    if base is sometimes:
        return eval_counterpart(keywords["op"])
    entry = entry_of(base)
    counterpart = entry.get("eval_op") if entry else None
    if counterpart is None:
        return None
    return functools.partial(
        counterpart, **{k: v for k, v in keywords.items() if k in options(counterpart)}
    )


def sometimes(images, seed, *, op: Callable, prob: float):
    """Image op `op(images, seed)` on each sample with probability `prob` (a per-sample mask, like
    albumentations' p=); the other samples stay as they are, or get the op's `eval_counterpart` when
    it changes the size (crop_to: the centre crop). `op` draws from `seed` exactly as it would
    alone."""
    images, seed = check_images(images), check_seed(seed)
    check_prob(prob)
    if mixes_labels(op):
        raise ValueError("a label-mixing op takes `prob` itself")
    keep = eval_counterpart(op)
    if prob == 0.0:
        return images if keep is None else keep(images)
    out = op(images, seed)
    if prob == 1.0:
        return out
    apply = Draws(fold_in(seed, 0x5EED), 1, tf.shape(images)[0]).bernoulli(prob)
    return tf.where(per_sample(apply), out, images if keep is None else keep(images))
