"""airbench94's network in Keras (Keller Jordan's CIFAR-10 speed record,
github.com/KellerJordan/cifar10-airbench).

    frozen 2x2 patch-whitening conv (24 channels, bias trained) -> GELU
    3 conv groups: conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU   (64, 256, 256)
    (GELU unless another `activation` is given)
    max-pool 3 -> Dense without bias -> logits x 1/9

What it takes from the PyTorch original, and how:
  * The first conv is fixed to the whitening transform of 2x2 training patches (eigenvectors of
    their covariance divided by the root eigenvalue, with the negated copy): `whitening_weights`.
    airbench feeds it pixels normalised to mean 0; we feed [0, 1] pixels and start its bias at
    -kernel . mean patch, which gives the same centred output.
  * The other convs start as identity on their first `in_channels` filters (torch's `dirac_`), and
    all kernels start from PyTorch's default U(+-1/sqrt(fan_in)) (models.common.Layers, torch_init).
  * BatchNorm has no scale, a bias that moves 64x faster than the other weights (airbench's
    `bias_scaler`) and momentum 0.6 (airbench's value, in Keras' convention; PyTorch's 0.4).
"""

import keras
import numpy as np
import tensorflow as tf

from trainers.activations import layer_activation

DEFAULT_WIDTHS = (64, 256, 256)
WHITENING_PATCH = 2
WHITENING_IMAGES = 5000  # training images whose patches set the whitening conv (airbench's number)
WHITENING_EPS = 5e-4 / 16  # airbench's 5e-4 on normalised pixels (std ~0.25), for pixels in [0, 1]
BIAS_LR_SCALE = 64.0
LOGIT_SCALE = 1 / 9
BN_MOMENTUM = 0.6  # Keras convention: running = 0.6 * running + 0.4 * batch (torch's momentum=0.4)


@keras.saving.register_keras_serializable(package="tfloops")
class PatchWhitening(keras.layers.Layer):
    """A 'valid' conv whose kernel is frozen (set from the data by `build_airbench`) and whose bias
    trains."""

    def __init__(
        self, filters, patch_size=WHITENING_PATCH, kernel_initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        self.filters, self.patch_size = int(filters), int(patch_size)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer
        )  # until the data sets it

    def build(self, input_shape):
        size = self.patch_size
        self.kernel = self.add_weight(
            shape=(size, size, input_shape[-1], self.filters),
            name="kernel",
            initializer=self.kernel_initializer,
            trainable=False,
        )
        self.bias = self.add_weight(shape=(self.filters,), name="bias", initializer="zeros")

    def call(self, inputs):
        kernel = keras.ops.cast(self.kernel, inputs.dtype)
        return keras.ops.conv(inputs, kernel, padding="valid") + keras.ops.cast(
            self.bias, inputs.dtype
        )

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        p = self.patch_size - 1
        return (n, None if h is None else h - p, None if w is None else w - p, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "patch_size": self.patch_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tfloops")
class ScaledBias(keras.layers.Layer):
    """Adds a per-channel bias stored divided by sqrt(`lr_scale`).

    The stored variable's gradient is sqrt(lr_scale) larger and each step moves the bias by
    sqrt(lr_scale) times the variable's step, so SGD trains the bias as with `lr_scale` times the
    learning rate, and decoupled weight decay shrinks it by the same fraction as every other weight.
    Keras optimizers have no per-variable learning rate; this reparametrisation gives one.
    """

    def __init__(self, lr_scale=BIAS_LR_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.lr_scale = float(lr_scale)

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), name="bias", initializer="zeros")

    def call(self, inputs):
        return inputs + keras.ops.cast(self.bias * np.sqrt(self.lr_scale), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "lr_scale": self.lr_scale}


@keras.saving.register_keras_serializable(package="tfloops")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization (no scale, no centre), trained through TensorFlow's fused kernel.

    Keras 3 normalises in float32 with separate moments, casts and element-wise ops;
    FusedBatchNormV3 takes the bf16 activations as they are (float32 statistics) in one oneDNN
    kernel, forward and backward, as PyTorch's BatchNorm does. Same variables, same moving-average
    update (the biased batch variance, as Keras); inference, synchronized statistics and anything
    else go through Keras' own call.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (
            training is True
            and self.trainable
            and mask is None
            and not self.synchronized
            and not self.scale
            and not self.center
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=tf.ones([channels]),
            offset=tf.zeros([channels]),
            mean=tf.constant([], tf.float32),
            variance=tf.constant([], tf.float32),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = (
            variance * (count - 1.0) / count
        )  # the kernel returns the unbiased variance; Keras keeps the biased
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return outputs


def whitening_weights(images, patch_size=WHITENING_PATCH, eps=WHITENING_EPS):
    """Kernel (patch, patch, channels, 2 * patch * patch * channels) and bias that whiten image
    patches.

    `images`: (n, h, w, c) float in [0, 1] (a few thousand training images are enough). The bias
    subtracts the mean patch, so the outputs are centred as well as decorrelated.
    """
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    p = patch_size
    # Every p x p patch, flattened in the kernel's (row, col, channel) order.
    patches = np.stack(
        [images[:, i : h - p + 1 + i, j : w - p + 1 + j, :] for i in range(p) for j in range(p)],
        axis=3,
    ).reshape(-1, p * p * c)
    mean = patches.mean(axis=0)
    patches = patches - mean
    covariance = (patches.T @ patches).astype(np.float64) / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    filters = eigenvectors / np.sqrt(eigenvalues + eps)  # columns whiten one direction each
    filters = filters[:, ::-1]  # largest eigenvalue first
    filters = np.concatenate([filters, -filters], axis=1)  # both signs survive the GELU
    kernel = filters.reshape(p, p, c, 2 * p * p * c).astype(np.float32)
    return kernel, (-mean @ filters).astype(np.float32)


def build_airbench(inputs, layers, widths, activation, dropout, whitening_images=None):
    """The body from `inputs` to the pooled features; `layers` is models.common.Layers (names,
    seeds)."""
    channels = inputs.shape[-1]
    whiten_width = 2 * WHITENING_PATCH * WHITENING_PATCH * channels
    whiten = PatchWhitening(
        whiten_width, kernel_initializer=layers.kernel_init("whiten"), name=layers.name("whiten")
    )
    x = keras.layers.Activation(layer_activation(activation), name=layers.name("whiten_act"))(
        whiten(inputs)
    )
    convs = []
    for g, width in enumerate(widths, start=1):
        for i in (1, 2):
            name = f"group{g}_conv{i}"
            conv = layers.conv(width, name, use_bias=False)
            convs.append(conv)
            x = conv(x)
            if i == 1:
                x = keras.layers.MaxPooling2D(2, name=layers.name(f"group{g}_pool"))(x)
            x = FusedBatchNorm(
                momentum=BN_MOMENTUM,
                epsilon=1e-5,
                center=False,
                scale=False,
                synchronized=layers.sync_batchnorm,
                name=layers.name(f"group{g}_bn{i}"),
            )(x)
            x = ScaledBias(name=layers.name(f"group{g}_bias{i}"))(x)
            x = keras.layers.Activation(
                layer_activation(activation), name=layers.name(f"group{g}_act{i}")
            )(x)
    x = keras.layers.MaxPooling2D(3, name=layers.name("final_pool"))(x)
    x = keras.layers.Flatten(name=layers.name("flatten"))(x)
    if dropout:
        x = layers.dropout(dropout, "dropout")(x)

    def initialise():
        """After the model is built: whitening from the data, identity on the first filters."""
        if whitening_images is not None:
            images = np.asarray(whitening_images)
            images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
            kernel, bias = whitening_weights(images)
            whiten.kernel.assign(kernel)
            whiten.bias.assign(bias)
        for conv in convs:
            kernel = conv.kernel.numpy()
            k, _, cin, cout = kernel.shape
            n = min(cin, cout)
            kernel[..., :n] = 0.0
            kernel[k // 2, k // 2, np.arange(n), np.arange(n)] = 1.0
            conv.kernel.assign(kernel)

    return x, initialise
