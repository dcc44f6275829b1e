"""Image classifiers by name: `build_model("resnet9", input_shape=(32, 32, 3), num_classes=10)`.

Every model maps float32 NHWC images in [0, 1] (or already normalised) to float32 LOGITS (no softmax).

Models:
  mlp                Flatten + Dense(widths) with `activation`; optional BatchNorm / Dropout. Any number of
                     hidden layers: widths=(0,) (--widths=0) or () is none, a linear model.
  cnn                A conv stack, then Dense layers: `widths` the 3x3 convs' filters (any number; default
                     32, 64, 64), `dense_widths` the hidden Dense units after them (default 64; (0,) for
                     none), `padding` 'valid' (default, the TF tutorial's) or 'same', `pool` where the 2x2
                     max-pools go: '' after every conv but the last (the default), 'every', 'none' or the
                     conv numbers '1,3'. The default is the classic small CNN: 3 convs, 2 pools, Dense 64.
  cnn_bn             cnn with BatchNormalization after each conv (conv -> BN -> activation).
  cnn_dropout        cnn with Dropout after each pool and after Dense 64 (rate 0.25 unless given).
  resnet9            The "ResNet-9" of the CIFAR-10 speed records (Page's DAWNBench net, airbench's
                     ancestor): prep conv 64; layer1 conv 128 + pool + residual(2 conv); layer2 conv 256
                     + pool; layer3 conv 512 + pool + residual; global max pool; Dense without bias;
                     logits scaled by 0.125.
  airbench           airbench94's net (trainers/airbench_net.py): frozen patch-whitening conv, 3 conv
                     groups (64, 256, 256) with GELU and scale-free BatchNorm, logits scaled by 1/9.
                     `whitening_images` (a few thousand training images) set the whitening.
  efficientnet_b0    keras.applications.EfficientNetB0 backbone (include_top=False) + new head.
  efficientnetv2_b0  keras.applications.EfficientNetV2B0 backbone (include_top=False) + new head.

Conventions:
  * `widths=None` and `batchnorm=None` take the model's own default (e.g. `widths` is (64, 64) for
    mlp and (64, 128, 256, 512) for resnet9); an argument that does not apply to a model is refused.
  * `activation` is one Keras activation name, or (mlp, cnn*) one per layer: "relu,sigmoid" (mlp: per
    hidden layer; cnn: per conv, then per hidden Dense).
  * Mixed precision: set the global policy (`keras.config.set_dtype_policy("mixed_bfloat16")`)
    before building; the logits layer is always float32.
  * `seed` gives every layer its own seeded initializer (derived from the seed and the layer's name),
    so two builds with one seed have identical weights, without touching global random state.
  * Models contain no Lambda layers, so `.keras` files load with `safe_mode=True`.
"""

import contextlib
import functools
import math
import random
import socket
import zlib

import keras
import numpy as np

from framework.data.datasets import DataError
from trainers import airbench_net
from trainers.activations import layer_activation

MODELS = (
    "mlp",
    "cnn",
    "cnn_bn",
    "cnn_dropout",
    "resnet9",
    "airbench",
    "efficientnet_b0",
    "efficientnetv2_b0",
)

_DEFAULT_WIDTHS = {
    "mlp": (64, 64),  # hidden Dense units, any number of layers
    "cnn": (
        32,
        64,
        64,
    ),  # the 3x3 convs' filters, any number (the Dense units: _DEFAULT_DENSE_WIDTHS)
    "resnet9": (64, 128, 256, 512),  # prep, layer1, layer2, layer3 channels
    "airbench": airbench_net.DEFAULT_WIDTHS,  # conv group 1, 2, 3 channels
}
_DEFAULT_WIDTHS["cnn_bn"] = _DEFAULT_WIDTHS["cnn_dropout"] = _DEFAULT_WIDTHS["cnn"]
_WIDTHS_MEANING = {
    "mlp": "hidden Dense units, any number of layers",
    "cnn": "the convs' filters, any number; the Dense units after them are --dense_widths",
    "resnet9": "prep, layer1, layer2, layer3 channels",
    "airbench": "conv group 1, 2, 3 channels",
}
_WIDTHS_MEANING["cnn_bn"] = _WIDTHS_MEANING["cnn_dropout"] = _WIDTHS_MEANING["cnn"]
CNNS = ("cnn", "cnn_bn", "cnn_dropout")  # the conv stacks that take dense_widths, padding and pool
_DEFAULT_DENSE_WIDTHS = (64,)
PADDINGS = ("valid", "same")
# The spatial size left before the head, from the input's smaller side: it must stay >= 1 (the cnns:
# _cnn_feature_size, which follows their widths, padding and pools).
_FEATURE_SIZE = {
    "resnet9": lambda s: s // 2 // 2 // 2,  # 3 max-pools
    "airbench": lambda s: (s - 1) // 2 // 2 // 2 // 3,
}  # 2x2 whitening, 3 pools, pool 3
_CNN_DROPOUT_RATE = 0.25
# From the speed-record recipes: keeps initial logits small.
_LOGIT_SCALES = {"resnet9": 0.125, "airbench": airbench_net.LOGIT_SCALE}

# (keras.applications constructor name, weights file, URL) for include_top=False ImageNet weights.
_EFFICIENTNETS = {
    "efficientnet_b0": (
        "EfficientNetB0",
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/",
    ),
    "efficientnetv2_b0": (
        "EfficientNetV2B0",
        "efficientnetv2-b0_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/",
    ),
}
_EFFICIENTNET_MIN_SIZE = 32  # keras.applications refuses smaller images
_DOWNLOAD_TIMEOUT_S = 60  # per socket operation, so a dead network fails instead of hanging


@keras.saving.register_keras_serializable(package="tfloops")
class Scale(keras.layers.Layer):
    """Multiplies its input by a constant (a serializable replacement for `Lambda(lambda x: c * x)`)."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return inputs * keras.ops.cast(self.scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def build_model(
    name,
    *,
    input_shape,
    num_classes,
    widths=None,
    activation=None,
    batchnorm=None,
    dropout=0.0,
    sync_batchnorm=False,
    pretrained=False,
    freeze_backbone=False,
    seed=None,
    name_prefix=None,
    whitening_images=None,
    dense_widths=None,
    padding=None,
    pool=None,
):
    """Builds model `name` (one of MODELS) returning float32 logits of shape (batch, num_classes).

    Args:
      name: one of MODELS.
      input_shape: shape of one example, e.g. (28, 28, 1) or (32, 32, 3); mlp also takes (features,).
      num_classes: number of logits.
      widths: layer widths, None for the model's default (see _DEFAULT_WIDTHS): mlp any number of
        hidden units ((0,) or (): none, a linear model); cnn* the filters of any number of 3x3 convs;
        resnet9 4 channel counts; airbench 3 (its conv groups).
      activation: Keras activation name for mlp/cnn*/resnet9/airbench; None for the model's own
        (relu; gelu for airbench). mlp and cnn* also take one per layer, "relu,sigmoid" or a sequence
        (mlp: per hidden layer; cnn*: per conv, then per hidden Dense). The efficientnets keep their
        swish and refuse anything but the default.
      batchnorm: BatchNormalization after each conv/hidden Dense; None means the model's default
        (True for cnn_bn, resnet9 and airbench, which cannot turn it off; False for mlp/cnn/cnn_dropout).
      dropout: rate of the Dropout layers (mlp: after each hidden layer; cnn*: after each pool and
        the Dense; resnet9 and efficientnets: before the logits); 0 means none, except that
        cnn_dropout then uses 0.25.
      sync_batchnorm: make every BatchNormalization `synchronized=True` (statistics across replicas).
      pretrained: efficientnets only: load ImageNet weights (needs the weights file, see the error).
      freeze_backbone: only the final logits layer is trainable (linear probing); a frozen
        efficientnet backbone runs its BatchNormalization in inference mode.
      seed: int for deterministic initialization and dropout, None for random.
      name_prefix: prefix for the model's and its layers' names (to tell two models apart).
      whitening_images: airbench only: training images (uint8 or float in [0, 1]) whose 2x2 patches
        set the frozen whitening conv; None leaves it random (e.g. before restoring weights).
      dense_widths: cnn* only: hidden Dense units after the convs, None for (64,); (0,) or (): none
        (the logits follow the flattened convs).
      padding: cnn* only: 'valid' (None, the default) or 'same' (keeps the size: deeper stacks fit).
      pool: cnn* only: where the 2x2 max-pools go: None or '' after every conv but the last, 'every',
        'none', or the conv numbers ("1,2" or a sequence of ints, counted from 1).
    """
    if name not in MODELS:
        raise ValueError(f"`name` ({name!r}) must be one of {', '.join(MODELS)}")
    input_shape = _check_input_shape(name, input_shape)
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(f"`num_classes` ({num_classes!r}) must be a positive integer")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
    ):
        raise ValueError(f"`seed` ({seed!r}) must be None or a non-negative integer")
    if dropout is None:
        dropout = 0.0
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` ({dropout!r}) must be in [0, 1)")
    if whitening_images is not None and name != "airbench":
        raise ValueError(f"`whitening_images` only applies to airbench, not {name!r}")
    if pretrained and name not in _EFFICIENTNETS:
        raise ValueError(
            f"`pretrained` ({pretrained!r}) is only available for "
            f"{', '.join(_EFFICIENTNETS)}; {name!r} has no pretrained weights"
        )
    # airbench's hyperparameters were tuned with PyTorch's init, ~1.7x smaller than Glorot here.
    layers = _Layers(seed, name_prefix, sync_batchnorm, torch_init=name == "airbench")

    if name in _EFFICIENTNETS:
        for arg, value in (("widths", widths), ("batchnorm", batchnorm)):
            if value is not None:
                raise ValueError(f"`{arg}` ({value!r}) does not apply to {name}: leave it None")
        if activation not in (None, "relu"):
            raise ValueError(
                f"`activation` ({activation!r}) does not apply to {name}, which uses "
                f"swish: leave the default"
            )
        return _efficientnet(
            name, layers, input_shape, num_classes, dropout, pretrained, freeze_backbone, seed
        )

    for arg, value in (("dense_widths", dense_widths), ("padding", padding), ("pool", pool)):
        if value not in (None, "") and name not in CNNS:
            raise ValueError(f"`{arg}` ({value!r}) only applies to {', '.join(CNNS)}, not {name}")
    widths = _check_widths(name, widths)
    if name in CNNS:
        dense_widths = (
            _DEFAULT_DENSE_WIDTHS if dense_widths is None else _no_layers_if_zero(dense_widths)
        )
        padding = padding or "valid"
        if padding not in PADDINGS:
            raise ValueError(f"`padding` ({padding!r}) must be one of {', '.join(PADDINGS)}")
        pool = pool_positions(pool, len(widths))
        activation = _check_activations(activation, len(widths) + len(dense_widths), name)
    elif name == "mlp":
        activation = _check_activations(activation, len(widths), name)
    else:
        activation = _check_activation(activation or ("gelu" if name == "airbench" else "relu"))
    if batchnorm is None:
        batchnorm = name in ("cnn_bn", "resnet9", "airbench")
    if name == "airbench" and not batchnorm:
        raise ValueError(
            "`batchnorm` (False) does not apply to airbench, which always has BatchNorm"
        )
    if name == "cnn_dropout" and not dropout:
        dropout = _CNN_DROPOUT_RATE
    inputs = keras.Input(shape=input_shape, name=layers.name("images"))
    initialise = None
    if name == "mlp":
        features = _mlp_body(inputs, layers, widths, activation, batchnorm, dropout)
    elif name in CNNS:
        features = _cnn_body(
            inputs, layers, widths, dense_widths, activation, batchnorm, dropout, padding, pool
        )
    elif name == "resnet9":
        features = _resnet9_body(inputs, layers, widths, activation, batchnorm, dropout)
    elif name == "airbench":
        features, initialise = airbench_net.build_airbench(
            inputs, layers, widths, activation, dropout, whitening_images
        )

    # Head. float32 whatever the global policy, so logits (and the loss) stay float32.
    head = [
        layers.dense(num_classes, "logits", use_bias=name not in _LOGIT_SCALES, dtype="float32")
    ]
    if name in _LOGIT_SCALES:
        head.append(Scale(_LOGIT_SCALES[name], dtype="float32", name=layers.name("logit_scale")))
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


def options_error(
    name,
    *,
    widths=None,
    activation=None,
    pretrained=False,
    image_size=None,
    dense_widths=None,
    padding=None,
    pool=None,
) -> str | None:
    """Why `name` cannot take these options, in words for a user (None if it can): the checks of
    build_model that need no data, so a configuration can be refused before anything is built.
    `image_size` is the input's smaller side. Options left None/empty are the model's own."""
    if name not in MODELS:
        return f"unknown model {name!r}; valid models: {', '.join(MODELS)}"
    for arg, value in (("dense_widths", dense_widths), ("padding", padding), ("pool", pool)):
        if value not in (None, "", ()) and name not in CNNS:
            return f"--{arg} only applies to {', '.join(CNNS)}"
    if name in _EFFICIENTNETS:
        if widths:
            return f"{name} is a keras.applications backbone: its widths cannot be set"
        if activation not in (None, "", "relu"):
            return f"{name} keeps its own activation (swish): leave the activation unset"
    else:
        if pretrained:
            return f"only {', '.join(_EFFICIENTNETS)} have pretrained weights, not {name}"
        default = _DEFAULT_WIDTHS[name]
        if widths and not _widths_fit(name, widths):
            if name == "mlp":
                count = "positive widths, or 0 for no hidden layer (a linear model)"
            elif name in CNNS:
                count = "one or more positive widths"
            else:
                count = f"{len(default)} positive widths"
            return f"{name} takes {count} ({_WIDTHS_MEANING[name]}), e.g. {','.join(map(str, default))} (the default)"
        if dense_widths and not _widths_fit("mlp", dense_widths):
            return "--dense_widths takes positive widths, or 0 for no hidden Dense layer"
        if padding and padding not in PADDINGS:
            return f"--padding={padding}: one of {', '.join(PADDINGS)}"
        if activation:
            problem = _activations_error(name, activation, widths, dense_widths)
            if problem:
                return problem
    if name in CNNS:
        convs = len(widths) if widths else len(_DEFAULT_WIDTHS[name])
        try:
            positions = pool_positions(pool, convs)
        except ValueError as err:
            return str(err)
        size = functools.partial(
            _cnn_feature_size, convs=convs, same=padding == "same", pools=positions
        )
    else:
        size = _FEATURE_SIZE.get(name)
    if image_size and size and size(int(image_size)) < 1:
        smallest = next((s for s in range(1, 1 << 16) if size(s) >= 1), None)
        hint = (
            ""
            if name not in CNNS or padding == "same"
            else " (--padding=same keeps the size; fewer --widths or pools shrink it less)"
        )
        return f"{name} needs images of at least {smallest}x{smallest} pixels{hint}"
    return None


def pool_positions(pool, convs: int) -> tuple:
    """The conv numbers (from 1) followed by a max-pool: `pool` '' or None after every conv but the last,
    'every', 'none', "1,3" or a sequence of ints."""
    if pool in (None, ""):
        return tuple(range(1, convs))
    if pool == "every":
        return tuple(range(1, convs + 1))
    if pool == "none":
        return ()
    try:
        positions = tuple(int(p) for p in (pool.split(",") if isinstance(pool, str) else pool))
    except (TypeError, ValueError):
        positions = None
    if (
        positions is None
        or any(not 1 <= p <= convs for p in positions)
        or len(set(positions)) != len(positions)
    ):
        raise ValueError(
            f"--pool={pool if isinstance(pool, str) else ','.join(map(str, pool))}: "
            f"'every', 'none', or distinct conv numbers from 1 to {convs}, e.g. --pool=1,2"
        )
    return tuple(sorted(positions))


def _cnn_feature_size(s, *, convs, same, pools):
    """The spatial size after the conv stack (< 1: the images are too small for it)."""
    for i in range(1, convs + 1):
        s = s if same else s - 2
        if s < 1:
            return s
        if i in pools:
            s //= 2
    return s


def _no_layers_if_zero(widths):
    """(0,) stands for no layers (the command line cannot give an empty list: '' is the default)."""
    widths = tuple(widths)
    return () if widths == (0,) else widths


def _widths_fit(name, widths) -> bool:
    try:
        widths = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        return False
    if name == "mlp" and widths == (0,):
        return True
    if any(w < 1 for w in widths):
        return False
    if name in CNNS:
        return len(widths) >= 1
    return name == "mlp" or len(widths) == len(_DEFAULT_WIDTHS[name])


def _activations_error(name, activation, widths, dense_widths) -> str | None:
    names = _activation_list(activation)
    for one in names:
        try:
            _check_activation(one)
        except ValueError:
            return (
                f"unknown activation {one!r}: a Keras activation name, e.g. relu, gelu, silu, tanh"
            )
    if len(names) == 1:
        return None
    if name == "mlp":
        layers, what = (
            len(_no_layers_if_zero(widths) if widths else _DEFAULT_WIDTHS["mlp"]),
            "hidden layers",
        )
    elif name in CNNS:
        convs = len(widths) if widths else len(_DEFAULT_WIDTHS[name])
        dense = (
            len(_no_layers_if_zero(dense_widths)) if dense_widths else len(_DEFAULT_DENSE_WIDTHS)
        )
        layers, what = convs + dense, f"layers ({convs} convs + {dense} Dense)"
    else:
        return f"{name} takes one activation, not a list"
    if len(names) != layers:
        return f"{len(names)} activations for {layers} {what}: give one, or one per layer"
    return None


def _activation_list(activation) -> list:
    if isinstance(activation, str):
        return [a.strip() for a in activation.split(",")]
    return list(activation)


class _Layers:
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
        # PyTorch's momentum/epsilon, not Keras' 0.99, whose running statistics lag in short runs: cnn_bn
        # on 8,192 MNIST images for 128 steps (the MNIST trainer's defaults) scored 96.5% with 0.9 and
        # 11.6% with 0.99, whose running statistics were still 0.99**128 = 28% the initial ones.
        return keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, synchronized=self.sync_batchnorm, name=self.name(name)
        )

    def dropout(self, rate, name):
        return keras.layers.Dropout(rate, seed=self.layer_seed(name), name=self.name(name))

    def conv_block(self, x, filters, name, activation, batchnorm, pool=False):
        """conv -> [max-pool] -> [BN] -> activation (pooling first: BN on 4x fewer pixels)."""
        x = self.conv(filters, f"{name}_conv", use_bias=not batchnorm)(x)
        if pool:
            x = keras.layers.MaxPooling2D(2, name=self.name(f"{name}_pool"))(x)
        if batchnorm:
            x = self.batchnorm(f"{name}_bn")(x)
        return keras.layers.Activation(layer_activation(activation), name=self.name(f"{name}_act"))(
            x
        )


def _mlp_body(x, layers, widths, activations, batchnorm, dropout):
    x = keras.layers.Flatten(name=layers.name("flatten"))(x)
    for i, (units, activation) in enumerate(zip(widths, activations), start=1):
        x = layers.dense(units, f"dense{i}", use_bias=not batchnorm)(x)
        if batchnorm:
            x = layers.batchnorm(f"dense{i}_bn")(x)
        x = keras.layers.Activation(
            layer_activation(activation), name=layers.name(f"dense{i}_act")
        )(x)
        if dropout:
            x = layers.dropout(dropout, f"dense{i}_dropout")(x)
    return x


def _cnn_body(x, layers, widths, dense_widths, activations, batchnorm, dropout, padding, pools):
    # The TensorFlow tutorial CNN by default: 'valid' 3x3 convs, 2x2 max-pools after all but the last.
    # Layer names (and so the seeded initial weights) are the same as before these options existed.
    for i, filters in enumerate(widths, start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding=padding,
            use_bias=not batchnorm,
            kernel_initializer=layers.kernel_init(f"conv{i}"),
            name=layers.name(f"conv{i}"),
        )(x)
        if batchnorm:
            x = layers.batchnorm(f"conv{i}_bn")(x)
        x = keras.layers.Activation(
            layer_activation(activations[i - 1]), name=layers.name(f"conv{i}_act")
        )(x)
        if i in pools:
            x = keras.layers.MaxPooling2D(2, name=layers.name(f"pool{i}"))(x)
            if dropout:
                x = layers.dropout(dropout, f"pool{i}_dropout")(x)
    x = keras.layers.Flatten(name=layers.name("flatten"))(x)
    for j, units in enumerate(dense_widths, start=1):
        name = "dense" if len(dense_widths) == 1 else f"dense{j}"
        x = layers.dense(units, name, use_bias=not batchnorm)(x)
        if batchnorm:
            x = layers.batchnorm(f"{name}_bn")(x)
        x = keras.layers.Activation(
            layer_activation(activations[len(widths) + j - 1]), name=layers.name(f"{name}_act")
        )(x)
        if dropout:
            x = layers.dropout(dropout, f"{name}_dropout")(x)
    return x


def _resnet9_body(x, layers, widths, activation, batchnorm, dropout):
    prep, width1, width2, width3 = widths
    block = layers.conv_block
    x = block(x, prep, "prep", activation, batchnorm)
    for name, width, residual in (
        ("layer1", width1, True),
        ("layer2", width2, False),
        ("layer3", width3, True),
    ):
        x = block(x, width, name, activation, batchnorm, pool=True)
        if residual:
            y = block(x, width, f"{name}_res1", activation, batchnorm)
            y = block(y, width, f"{name}_res2", activation, batchnorm)
            x = keras.layers.Add(name=layers.name(f"{name}_add"))([x, y])
    x = keras.layers.GlobalMaxPooling2D(name=layers.name("global_pool"))(x)
    if dropout:
        x = layers.dropout(dropout, "dropout")(x)
    return x


def _efficientnet(
    name, layers, input_shape, num_classes, dropout, pretrained, freeze_backbone, seed
):
    constructor, weights_file, base_url = _EFFICIENTNETS[name]
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ValueError(f"`input_shape` ({input_shape!r}) must have 1 or 3 channels for {name}")
    if pretrained:
        _fetch_imagenet_weights(name, weights_file, base_url + weights_file)

    inputs = keras.Input(shape=input_shape, name=layers.name("images"))
    x = inputs
    if channels == 1:  # grey -> RGB, as the ImageNet weights expect
        x = keras.layers.Concatenate(name=layers.name("grey_to_rgb"))([x, x, x])
    if min(height, width) < _EFFICIENTNET_MIN_SIZE:
        # Upsample so the shorter side is 32, keeping the aspect ratio.
        factor = _EFFICIENTNET_MIN_SIZE / min(height, width)
        height, width = math.ceil(height * factor), math.ceil(width * factor)
        x = keras.layers.Resizing(height, width, name=layers.name("upsample"))(x)
    # The backbones start with their own Rescaling(1/255) + ImageNet normalisation: undo the /255.
    x = keras.layers.Rescaling(255.0, name=layers.name("to_0_255"))(x)

    # keras.applications draws its initializer seeds from Python's `random`: seed it for the build
    # only, then put the caller's random state back.
    saved_state = random.getstate()
    try:
        if seed is not None:
            random.seed(int(seed))
        with _download_timeout():
            backbone = getattr(keras.applications, constructor)(
                include_top=False,
                weights="imagenet" if pretrained else None,
                input_shape=(height, width, 3),
                pooling="avg",
            )
    except Exception as e:
        # Keras' get_file raises a bare Exception when a download fails (here: the cached file was
        # corrupt, so Keras fetched it again).
        if pretrained and type(e) is Exception:
            raise _weights_error(name, weights_file, base_url + weights_file, e) from e
        raise
    finally:
        random.setstate(saved_state)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(layers.sync_batchnorm)  # read at call time, saved in config
    if freeze_backbone:
        backbone.trainable = False
    # A frozen backbone keeps BN in inference mode, so fine-tuning later does not wreck its stats.
    x = backbone(x, training=False) if freeze_backbone else backbone(x)
    if dropout:
        x = layers.dropout(dropout, "head_dropout")(x)
    logits = layers.dense(num_classes, "logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=layers.name(name))


def _fetch_imagenet_weights(name, weights_file, url):
    """Puts the weights file in Keras' cache (where keras.applications then finds it) or explains."""
    try:
        with _download_timeout():
            keras.utils.get_file(weights_file, url, cache_subdir="models")
    except Exception as e:  # get_file raises a bare Exception on URL failures
        raise _weights_error(name, weights_file, url, e) from e


class WeightsUnavailableError(DataError, RuntimeError):
    """The ImageNet weights of --pretrained cannot be had (offline): the trainers print one line, exit 2."""


def _weights_error(name, weights_file, url, error):
    return WeightsUnavailableError(
        f"Could not download the ImageNet weights for {name} ({url}): {' '.join(str(error).split())}. "
        f"To proceed, either run once with internet access (Keras caches the file), or copy "
        f"{weights_file} into ~/.keras/models/ (or $KERAS_HOME/models/), or train from scratch "
        f"without --pretrained (pretrained=False)."
    )


@contextlib.contextmanager
def _download_timeout():
    """Makes a stalled download fail after a while instead of hanging (urllib has no timeout)."""
    saved_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved_timeout)


def _check_input_shape(name, input_shape):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if (
        shape is None
        or not shape
        or any(d < 1 for d in shape)
        or (name != "mlp" and len(shape) != 3)
    ):
        need = "positive integers" if name == "mlp" else "(height, width, channels)"
        raise ValueError(f"`input_shape` ({input_shape!r}) must be {need} for {name}")
    return shape


def _check_widths(name, widths):
    if widths is None:
        return _DEFAULT_WIDTHS[name]
    default = _DEFAULT_WIDTHS[name]
    if not _widths_fit(name, widths) and not (name == "mlp" and tuple(widths) == ()):
        if name == "mlp":
            count = "positive integers (or (0,) for none)"
        elif name in CNNS:
            count = "one or more positive integers"
        else:
            count = f"{len(default)} positive integers"
        raise ValueError(f"`widths` ({widths!r}) must be {count} for {name} (default {default})")
    return tuple(int(w) for w in _no_layers_if_zero(widths))


def _check_activations(activation, layers, name):
    """One activation name per layer: None -> relu for all; one name -> it for all."""
    names = _activation_list(activation or "relu")
    for one in names:
        _check_activation(one)
    if len(names) == 1:
        return names * layers
    if len(names) != layers:
        raise ValueError(
            f"`activation` ({activation!r}): {len(names)} activations for the {layers} layers "
            f"of this {name}: give one, or one per layer"
        )
    return names


def _check_activation(activation):
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError):
        raise ValueError(
            f"`activation` ({activation!r}) must be a Keras activation name, "
            f"e.g. relu, gelu, silu, tanh"
        ) from None
    return activation
