"""Label-mixing ops: mixup, cutmix, and either per sample; labels come back soft, float32 [B, K].

Own ops: keras.layers.MixUp/CutMix draw from a SeedGenerator variable and sample Beta through
tf.random.stateless_gamma, which has no XLA kernel (hence `_beta`).
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
    per_sample,
)


def soft_labels(labels, num_classes: int) -> tf.Tensor:
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
    """log of Gamma(alpha, 1) samples [B] from uniforms u [_GAMMA_ROWS, B] (Marsaglia-Tsang,
    vectorised over `_TRIES` proposals; all fail with probability below 0.05**8, then we return the
    mode's log). Own op: tf.random.stateless_gamma has no XLA kernel."""
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
    """Symmetric Beta(alpha, alpha) per sample as X / (X + Y), in log space so tiny alphas don't
    0/0."""
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
    return box_mask(height, width, cy - box_h // 2, cx - box_w // 2, box_h, box_w)


def _mix(images, soft, partner, own_weight):
    """out = w * x + (1 - w) * x[partner] per pixel (w [B, H, W, 1] in [0, 1]); labels mixed by
    mean(w), which is exactly lambda for mixup and the kept area fraction for cutmix."""
    lam = tf.reduce_mean(own_weight, axis=[1, 2, 3])[:, None]
    mixed_labels = lam * soft + (1.0 - lam) * tf.gather(soft, partner)
    other = tf.gather(images, partner)
    if images.dtype == tf.uint8:  # only reached by cutmix, whose weights are 0 or 1
        return tf.where(own_weight > 0.5, images, other), mixed_labels
    return own_weight * images + (1.0 - own_weight) * other, mixed_labels


@OPS.register("mixup", xla=True, mixes_labels=True)
def mixup(images, labels, seed, *, num_classes: int, alpha: float = 0.2, prob: float = 1.0):
    """Mixup (Zhang et al. 2018): x = lam x_i + (1 - lam) x_j with lam ~ Beta(alpha, alpha) per
    sample and j a random other sample; labels (int [B] or soft [B, K]) mixed alike -> float32 [B,
    K]. Samples not picked (1 - prob) keep lam = 1. float32 only.

    Own op: keras.layers.MixUp/CutMix draw from a SeedGenerator variable and sample Beta through
    tf.random.stateless_gamma (no XLA kernel)."""
    images, seed = check_images(images, float_only=True), check_seed(seed)
    check_prob(prob)
    soft = soft_labels(labels, num_classes)
    batch = tf.shape(images)[0]
    draws = Draws(seed, 2 + _BETA_ROWS, batch)
    partners = _partners(draws)
    lam = tf.where(draws.bernoulli(prob), _beta(draws, alpha), 1.0)
    weight = tf.broadcast_to(per_sample(lam), tf.concat([tf.shape(images)[:3], [1]], 0))
    return _mix(images, soft, partners, weight)


@OPS.register("cutmix", xla=True, mixes_labels=True)
def cutmix(images, labels, seed, *, num_classes: int, alpha: float = 1.0, prob: float = 1.0):
    """CutMix (Yun et al. 2019): pastes a box from a random other sample; box side sqrt(1 - lam) of
    the image, lam ~ Beta(alpha, alpha), centre uniform, clipped at the border. The label weight of
    the pasted sample is exactly the pasted area fraction. Returns float32 [B, K] labels. Any
    dtype."""
    images, seed = check_images(images), check_seed(seed)
    check_prob(prob)
    soft = soft_labels(labels, num_classes)
    _, height, width, _ = images.shape
    batch = tf.shape(images)[0]
    draws = Draws(seed, 4 + _BETA_ROWS, batch)
    partners = _partners(draws)
    pasted = _cut_boxes(draws, height, width, alpha) & per_sample(draws.bernoulli(prob))
    return _mix(images, soft, partners, tf.cast(~pasted, tf.float32))


@OPS.register("mixup_or_cutmix", xla=True, mixes_labels=True)
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
    """Per sample, cutmix with probability `cutmix_prob`, otherwise mixup (timm's defaults), each
    against a random other sample. float32 only; returns float32 [B, K] labels."""
    images, seed = check_images(images, float_only=True), check_seed(seed)
    check_prob(prob)
    check_prob(cutmix_prob)
    soft = soft_labels(labels, num_classes)
    _, height, width, _ = images.shape
    batch = tf.shape(images)[0]
    draws = Draws(seed, 5 + 2 * _BETA_ROWS, batch)
    partners = _partners(draws)
    lam = per_sample(_beta(draws, mixup_alpha))
    kept = tf.cast(~_cut_boxes(draws, height, width, cutmix_alpha), tf.float32)
    use_cut = per_sample(draws.bernoulli(cutmix_prob))
    weight = tf.where(use_cut, kept, lam)
    weight = tf.where(per_sample(draws.bernoulli(prob)), weight, 1.0)
    return _mix(images, soft, partners, weight)
