"""Triplet loss for similarity embeddings (as in FEC, Vemulapalli & Agarwal 2019), vectorized.

A triplet is (I1, I2, I3) where (I1, I2) is the most similar pair and I3 the odd one out; e1, e2, e3
are their embeddings, shape (batch, dim). With squared distances dij = |ei - ej|^2 and margin delta:

    loss = max(0, d12 - d13 + delta) + max(0, d12 - d23 + delta)

`votes` (shape (batch,)) is the fraction of annotators who agreed with the triplet's ordering (the
top vote fraction, in [0, 1]). The batch loss is the votes-weighted mean.

The trainer's two losses over a triplet in its CSV order (faces f0, f1, f2) with `shares` (batch,
3), share k = the fraction of annotators who picked face k as the odd one out (`ordering_losses`
gives the loss L_k of each of the three orderings, "face k is the odd one"):
  vote_weighted (the notebook's, the default): sum_k share_k * L_k, every annotator's opinion
  counts; top_vote: share_top * L_top, only the majority ordering (this trainer's loss before).
"""

import keras
import tensorflow as tf

from trainers import models


def _squared_distances(e1, e2, e3):
    e1, e2, e3 = (tf.cast(e, tf.float32) for e in (e1, e2, e3))
    d12 = tf.reduce_sum(tf.square(e1 - e2), axis=-1)
    d13 = tf.reduce_sum(tf.square(e1 - e3), axis=-1)
    d23 = tf.reduce_sum(tf.square(e2 - e3), axis=-1)
    return d12, d13, d23


def _flat_votes(votes):
    # (batch, 1) -> (batch,): broadcasting (batch, 1) against (batch,) would silently give (batch,
    # batch).
    return tf.reshape(tf.cast(votes, tf.float32), [-1])


def triplet_loss_per_example(e1, e2, e3, delta):
    """Returns the float32 triplet loss of each triplet, shape (batch,)."""
    if isinstance(delta, (int, float)) and delta < 0:
        raise ValueError(f"`delta` ({delta!r}) must be >= 0")
    d12, d13, d23 = _squared_distances(e1, e2, e3)
    return tf.nn.relu(d12 - d13 + delta) + tf.nn.relu(d12 - d23 + delta)


def weighted_triplet_loss(e1, e2, e3, votes, delta, *, normalizer=None):
    """Returns sum(votes * loss) / sum(votes), a float32 scalar (0 when all votes are 0).

    normalizer: divide by this instead of sum(votes), e.g. the sum of votes over all replicas, so
    that
      summing the per-replica losses gives the global weighted mean.
    """
    votes = _flat_votes(votes)
    total = tf.reduce_sum(votes * triplet_loss_per_example(e1, e2, e3, delta))
    normalizer = tf.reduce_sum(votes) if normalizer is None else tf.cast(normalizer, tf.float32)
    return tf.math.divide_no_nan(total, normalizer)


def triplet_correct(e1, e2, e3):
    """Returns, per triplet, whether the embedding agrees: d12 < d13 and d12 < d23 (bool,
    (batch,))."""
    d12, d13, d23 = _squared_distances(e1, e2, e3)
    return tf.logical_and(d12 < d13, d12 < d23)


def triplet_accuracy(e1, e2, e3, votes=None):
    """Fraction of triplets whose embedding agrees with the annotators (float32 scalar).

    With `votes`, only triplets whose top vote fraction exceeds 0.5 (a majority agreed) count; the
    accuracy is 0 when none do.
    """
    correct = tf.cast(triplet_correct(e1, e2, e3), tf.float32)
    if votes is None:
        return tf.reduce_mean(correct)
    counted = tf.cast(_flat_votes(votes) > 0.5, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(correct * counted), tf.reduce_sum(counted))


LOSSES = ("vote_weighted", "top_vote")


def ordering_losses(e0, e1, e2, delta):
    """The triplet loss of each ordering of faces (f0, f1, f2): (batch, 3), column k = L_k, the loss
    when face k is the odd one out (the other two being the similar pair)."""
    d01, d02, d12 = _squared_distances(e0, e1, e2)
    return tf.stack(
        [
            tf.nn.relu(d12 - d01 + delta) + tf.nn.relu(d12 - d02 + delta),  # f0 odd: pair (f1, f2)
            tf.nn.relu(d02 - d01 + delta) + tf.nn.relu(d02 - d12 + delta),  # f1 odd: pair (f0, f2)
            tf.nn.relu(d01 - d02 + delta) + tf.nn.relu(d01 - d12 + delta),
        ],  # f2 odd: pair (f0, f1)
        axis=-1,
    )


def shares_loss_per_example(e0, e1, e2, shares, delta, *, loss="vote_weighted"):
    """Per-triplet loss (batch,) from the odd-one-out vote shares (batch, 3) (see the module
    docstring): 'vote_weighted' sums the three orderings' losses weighted by their shares;
    'top_vote' keeps the top-voted ordering's loss times its share (the first of equal tops)."""
    if loss not in LOSSES:
        raise ValueError(f"`loss` ({loss!r}) must be one of {', '.join(LOSSES)}")
    if isinstance(delta, (int, float)) and delta < 0:
        raise ValueError(f"`delta` ({delta!r}) must be >= 0")
    shares = tf.reshape(tf.cast(shares, tf.float32), [-1, 3])
    losses = ordering_losses(e0, e1, e2, delta)
    if loss == "top_vote":
        shares = shares * tf.one_hot(tf.argmax(shares, axis=-1), 3)
    return tf.reduce_sum(shares * losses, axis=-1)


def odd_one_hits(e0, e1, e2, shares):
    """(correct, counted), float32 (batch,) each: `counted` marks triplets whose top share exceeds
    0.5 (a majority picked one odd face); `correct` that the embedding agrees, i.e. the pair without
    the majority's odd face is strictly the closest. Accuracy = sum(correct * counted) /
    sum(counted) over all the batches of an epoch or evaluation: a batch in which no triplet passes
    the filter adds nothing to either sum (it is neither a 0 nor a NaN in the mean)."""
    shares = tf.reshape(tf.cast(shares, tf.float32), [-1, 3])
    d01, d02, d12 = _squared_distances(e0, e1, e2)
    # Column k: the distance of the pair without face k.
    pair_distance = tf.stack([d12, d02, d01], axis=-1)
    odd = tf.argmax(shares, axis=-1)
    closest = tf.gather(pair_distance, odd, batch_dims=1)
    others = tf.where(tf.one_hot(odd, 3) > 0, tf.constant(float("inf")), pair_distance)
    correct = tf.cast(closest < tf.reduce_min(others, axis=-1), tf.float32)
    counted = tf.cast(tf.reduce_max(shares, axis=-1) > 0.5, tf.float32)
    return correct, counted


@keras.saving.register_keras_serializable(package="tfloops")
class L2NormalizeScale(keras.layers.Layer):
    """Scales each vector to L2 norm `scale` (computed in float32)."""

    def __init__(self, scale=1.0, epsilon=1e-12, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.scale, self.epsilon = float(scale), float(epsilon)

    def call(self, inputs):
        squared_norm = keras.ops.sum(keras.ops.square(inputs), axis=-1, keepdims=True)
        return inputs * (
            self.scale * keras.ops.rsqrt(keras.ops.maximum(squared_norm, self.epsilon))
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "epsilon": self.epsilon}


def build_embedding_model(
    backbone_name, *, input_shape, embedding_dim=16, scale=1.0, dropout=0.0, **model_kwargs
):
    """Returns a model mapping images to embeddings of shape (batch, embedding_dim) with norm
    `scale`.

    The body is `models.build_model(backbone_name, num_classes=embedding_dim, **model_kwargs)`: its
    final float32 Dense becomes the embedding layer, followed by L2 normalisation and scaling. Apply
    the one model to I1, I2 and I3 (e.g. concatenated into one batch, so BatchNorm sees all three).
    With unit-norm embeddings squared distances lie in [0, 4]; FEC used a margin around 0.1.
    `dropout` > 0 puts one Dropout layer (seeded by `seed`) right before the embedding layer,
    whatever the backbone; `pretrained=True` (efficientnets) starts the backbone from ImageNet
    weights.
    """
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"`embedding_dim` ({embedding_dim!r}) must be a positive integer")
    if not scale > 0:
        raise ValueError(f"`scale` ({scale!r}) must be positive")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` ({dropout!r}) must be in [0, 1)")
    body = models.build_model(
        backbone_name, input_shape=input_shape, num_classes=embedding_dim, **model_kwargs
    )
    prefix = model_kwargs.get("name_prefix")
    named = lambda name: f"{prefix}_{name}" if prefix else name  # noqa: E731
    x = body.output
    if dropout:
        # The head is the last Dense and what follows it (a logit scale): re-run it on dropped
        # features.
        last = max(
            i for i, layer in enumerate(body.layers) if isinstance(layer, keras.layers.Dense)
        )
        seed = model_kwargs.get("seed")
        x = keras.layers.Dropout(
            dropout, seed=None if seed is None else seed + 7919, name=named("embedding_dropout")
        )(body.layers[last].input)
        for layer in body.layers[last:]:
            x = layer(x)
    embeddings = L2NormalizeScale(scale, name=named("l2_normalize"))(x)
    return keras.Model(body.input, embeddings, name=f"{body.name}_embedding")
