"""Activations of the built-in models; GELU as two fused kernels.

Keras' `gelu` (exact, with erf) is five element-wise ops, and autodiff adds about twice as many for
its gradient: each a pass over the activations, in bf16 each converting every element, which made
GELU a large share of the CIFAR nets' step (benchmarks/reports/step_profile). Here the forward and
the gradient are each one XLA-compiled function computed in float32 (a hand-written gradient, since
autodiff of the fused forward would not be fused): the same function (the same erf; outputs within
one bf16 rounding) in two passes instead of many.
"""

import keras
import tensorflow as tf

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@tf.function(jit_compile=True)
def _gelu_forward(x):
    x32 = tf.cast(x, tf.float32)
    return tf.cast(x32 * (0.5 * (1.0 + tf.math.erf(x32 * _SQRT_HALF))), x.dtype)


@tf.function(jit_compile=True)
def _gelu_backward(x, dy):
    x32 = tf.cast(x, tf.float32)
    cdf = 0.5 * (1.0 + tf.math.erf(x32 * _SQRT_HALF))
    pdf = tf.exp(-0.5 * tf.square(x32)) * _INV_SQRT_2PI
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + x32 * pdf), x.dtype)


@keras.saving.register_keras_serializable(package="tfloops", name="gelu")
@tf.autograph.experimental.do_not_convert
@tf.custom_gradient
def gelu(x):
    """x * Phi(x), Phi the standard normal CDF (keras.activations.gelu, approximate=False)."""

    def grad(dy):
        with tf.name_scope(
            "gelu"
        ):  # the profile finds the gradient by it (benchmarks/step_profile.py)
            return _gelu_backward(x, dy)

    with tf.name_scope("gelu"):
        return _gelu_forward(x), grad


gelu.__name__ = "gelu"  # what Keras and a model summary show (the wrappers' own name is 'wrapper')


def layer_activation(name):
    """The activation a built-in model's layer applies: ours for gelu, else Keras' by name."""
    return gelu if name == "gelu" else name
