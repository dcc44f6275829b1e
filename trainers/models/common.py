"""What the models share: seeded, prefixed layers (`Layers`), the logits head, and the option checks
that several models make (widths, one activation or one per layer, the smallest input)."""

import zlib

import keras
import numpy as np

from trainers.activations import layer_activation


@keras.saving.register_keras_serializable(package="tfloops")
class Scale(keras.layers.Layer):
    """Multiplies its input by a constant (a serializable replacement for `Lambda(lambda x: c *
    x)`)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return inputs * keras.ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class Layers:
    """Makes layers with prefixed names and per-layer seeds derived from (seed, layer name)."""

    def __init__(self, seed, prefix, sync_batchnorm, torch_init=False):
        self.seed, self.prefix, self.sync_batchnorm = seed, prefix, sync_batchnorm
        self.torch_init = torch_init  # PyTorch's default U(+-1/sqrt(fan_in)) instead of Glorot

    def name(self, name):
        return f"{self.prefix}_{name}" if self.prefix else name

    def layer_seed(self, name):
        if self.seed is None:
            return None
        # crc32 rather than hash(): Python salts str hashes per process.
        state = np.random.SeedSequence([int(self.seed), zlib.crc32(name.encode())])
        return int(state.generate_state(1)[0] >> 1)  # fits int32, as TF's stateless ops want

    def kernel_init(self, name):
        if self.torch_init:
            return keras.initializers.VarianceScaling(
                1 / 3, "fan_in", "uniform", seed=self.layer_seed(name)
            )
        return keras.initializers.GlorotUniform(seed=self.layer_seed(name))

    def conv(self, filters, name, use_bias):
        return keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=use_bias,
            kernel_initializer=self.kernel_init(name),
            name=self.name(name),
        )

    def dense(self, units, name, use_bias=True, dtype=None):
        return keras.layers.Dense(
            units,
            use_bias=use_bias,
            kernel_initializer=self.kernel_init(name),
            dtype=dtype,
            name=self.name(name),
        )

    def batchnorm(self, name):
        # PyTorch's momentum/epsilon, not Keras' 0.99, whose running statistics still hold much of
        # their initial values after the few hundred steps of a short run.
        return keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, synchronized=self.sync_batchnorm, name=self.name(name)
        )

    def dropout(self, rate, name):
        return keras.layers.Dropout(rate, seed=self.layer_seed(name), name=self.name(name))

    def activation(self, activation, name):
        return keras.layers.Activation(layer_activation(activation), name=self.name(name))

    def conv_block(self, x, filters, name, activation, batchnorm, pool=False):
        """conv -> [max-pool] -> [BN] -> activation (pooling first: BN on 4x fewer pixels)."""
        x = self.conv(filters, f"{name}_conv", use_bias=not batchnorm)(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=self.name(f"{name}_pool"))(x)
        if batchnorm:
            x = self.batchnorm(f"{name}_bn")(x)
        return self.activation(activation, f"{name}_act")(x)


def with_head(
    inputs,
    features,
    layers,
    num_classes,
    *,
    name,
    logit_scale=None,
    initialise=None,
    freeze_backbone=False,
):
    """The model: `features` -> float32 logits (Dense; without bias and scaled where `logit_scale`
    is given), whatever the global dtype policy. `freeze_backbone`: only the head trains."""
    head = [layers.dense(num_classes, "logits", use_bias=logit_scale is None, dtype="float32")]
    if logit_scale is not None:
        head.append(Scale(logit_scale, dtype="float32", name=layers.name("logit_scale")))
    logits = features
    for layer in head:
        logits = layer(logits)
    model = keras.Model(inputs, logits, name=layers.name(name))
    if initialise:
        initialise()
    if freeze_backbone:
        for layer in model.layers:
            layer.trainable = any(layer is h for h in head)
    return model


def no_layers_if_zero(widths):
    """(0,) stands for no layers (the command line cannot give an empty list: '' is the default)."""
    widths = tuple(widths)
    return () if widths == (0,) else widths


def positive_ints(values) -> tuple | None:
    try:
        values = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        return None
    return values if all(v >= 1 for v in values) else None


def widths_problem(name, widths, default, meaning, *, count=None, zero_means_none=False):
    """Why `widths` do not fit: `count` of them (None: one or more), positive (`zero_means_none`: or
    (0,) / (), no layers); None if they fit."""
    widths = tuple(widths)
    if zero_means_none and widths in ((), (0,)):
        return None
    ints = positive_ints(widths)
    if ints and (count is None or len(ints) == count):
        return None
    if zero_means_none:
        need = "positive widths, or 0 for no hidden layer (a linear model)"
    elif count is None:
        need = "one or more positive widths"
    else:
        need = f"{count} positive widths"
    return f"{name} takes {need} ({meaning}), e.g. {','.join(map(str, default))} (the default)"


def activation_list(activation) -> list:
    if isinstance(activation, str):
        return [a.strip() for a in activation.split(",")]
    return list(activation)


def activations_problem(name, activation, layers=None, what="layers"):
    """Why `activation` does not fit: an unknown name, or a list whose length is not `layers` (None:
    the model takes one activation); None if it fits."""
    names = activation_list(activation)
    for one in names:
        try:
            keras.activations.get(one)
        except (ValueError, TypeError):
            return (
                f"unknown activation {one!r}: a Keras activation name, e.g. relu, gelu, silu, tanh"
            )
    if len(names) == 1:
        return None
    if layers is None:
        return f"{name} takes one activation, not a list"
    if len(names) != layers:
        return f"{len(names)} activations for {layers} {what}: give one, or one per layer"
    return None


def per_layer(activation, layers: int) -> list:
    """One activation name per layer (one name given: it for all)."""
    names = activation_list(activation)
    return names * layers if len(names) == 1 else names


def size_problem(name, image_size, feature_size, hint=""):
    """Why images of side `image_size` are too small: `feature_size(side)` is the spatial size left
    before the head, which must stay >= 1; None if they fit (or the size is not known yet)."""
    if not image_size or feature_size(int(image_size)) >= 1:
        return None
    smallest = next((s for s in range(1, 1 << 16) if feature_size(s) >= 1), None)
    return f"{name} needs images of at least {smallest}x{smallest} pixels{hint}"


def staged_check(default, meaning, feature_size):
    """The check of a net of `len(default)` stages and one activation (resnet9, airbench): that many
    positive widths, one activation name, and images large enough for `feature_size(side) >= 1`."""

    def check(name, image_size=None, widths=None, activation=None, **options):
        problem = widths_problem(name, widths or default, default, meaning, count=len(default))
        if problem:
            return "widths", problem
        problem = activation and activations_problem(name, activation)
        if problem:
            return "activation", problem
        problem = size_problem(name, image_size, feature_size)
        return ("input_shape", problem) if problem else None

    return check
