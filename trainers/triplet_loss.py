"""Triplet loss for similarity embeddings (as in FEC, Vemulapalli & Agarwal 2019), vectorized.

A triplet is (I1, I2, I3) where (I1, I2) is the most similar pair and I3 the odd one out; e1, e2, e3
are their embeddings, shape (batch, dim). With squared distances dij = |ei - ej|^2 and margin delta:

    loss = max(0, d12 - d13 + delta) + max(0, d12 - d23 + delta)

`votes` (shape (batch,)) is the fraction of annotators who agreed with the triplet's ordering (the top
vote fraction, in [0, 1]); `fec_data.load_fec` returns it. The batch loss is the votes-weighted mean.
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
    # (batch, 1) -> (batch,): broadcasting (batch, 1) against (batch,) would silently give (batch, batch).
    return tf.reshape(tf.cast(votes, tf.float32), [-1])


def triplet_loss_per_example(e1, e2, e3, delta):
    """Returns the float32 triplet loss of each triplet, shape (batch,)."""
    if isinstance(delta, (int, float)) and delta < 0:
        raise ValueError(f"`delta` ({delta!r}) must be >= 0")
    d12, d13, d23 = _squared_distances(e1, e2, e3)
    return tf.nn.relu(d12 - d13 + delta) + tf.nn.relu(d12 - d23 + delta)


def weighted_triplet_loss(e1, e2, e3, votes, delta, *, normalizer=None):
    """Returns sum(votes * loss) / sum(votes), a float32 scalar (0 when all votes are 0).

    normalizer: divide by this instead of sum(votes), e.g. the sum of votes over all replicas, so that
      summing the per-replica losses gives the global weighted mean.
    """
    votes = _flat_votes(votes)
    total = tf.reduce_sum(votes * triplet_loss_per_example(e1, e2, e3, delta))
    normalizer = tf.reduce_sum(votes) if normalizer is None else tf.cast(normalizer, tf.float32)
    return tf.math.divide_no_nan(total, normalizer)


def triplet_correct(e1, e2, e3):
    """Returns, per triplet, whether the embedding agrees: d12 < d13 and d12 < d23 (bool, (batch,))."""
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


@keras.saving.register_keras_serializable(package="tfloops")
class L2NormalizeScale(keras.layers.Layer):
    """Scales each vector to L2 norm `scale` (computed in float32)."""

    def __init__(self, scale=1.0, epsilon=1e-12, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.scale, self.epsilon = float(scale), float(epsilon)

    def call(self, inputs):
        squared_norm = keras.ops.sum(keras.ops.square(inputs), axis=-1, keepdims=True)
        return inputs * (self.scale * keras.ops.rsqrt(keras.ops.maximum(squared_norm, self.epsilon)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "epsilon": self.epsilon}


def build_embedding_model(backbone_name, *, input_shape, embedding_dim=16, scale=1.0,
                          **model_kwargs):
    """Returns a model mapping images to embeddings of shape (batch, embedding_dim) with norm `scale`.

    The body is `models.build_model(backbone_name, num_classes=embedding_dim, **model_kwargs)`: its
    final float32 Dense becomes the embedding layer, followed by L2 normalisation and scaling. Apply
    the one model to I1, I2 and I3 (e.g. concatenated into one batch, so BatchNorm sees all three).
    With unit-norm embeddings squared distances lie in [0, 4]; FEC used a margin around 0.1.
    """
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ValueError(f"`embedding_dim` ({embedding_dim!r}) must be a positive integer")
    if not scale > 0:
        raise ValueError(f"`scale` ({scale!r}) must be positive")
    body = models.build_model(backbone_name, input_shape=input_shape, num_classes=embedding_dim,
                              **model_kwargs)
    prefix = model_kwargs.get("name_prefix")
    name = f"{prefix}_l2_normalize" if prefix else "l2_normalize"
    embeddings = L2NormalizeScale(scale, name=name)(body.output)
    return keras.Model(body.input, embeddings, name=f"{body.name}_embedding")
