"""cnn, cnn_bn, cnn_dropout: a stack of 3x3 convs, then Dense layers (the TensorFlow tutorial's
small CNN by default: 3 'valid' convs 32, 64, 64 with 2x2 max-pools after all but the last, Dense
64).

  widths        the convs' filters, any number
  dense_widths  the hidden Dense units after them ((0,): none, the logits follow the convs)
  padding       'valid' (the default) or 'same' (keeps the size: deeper stacks fit)
  pool          where the 2x2 max-pools go: '' after every conv but the last, 'every', 'none' or
                the conv numbers '1,3'
  activation    one name, or one per conv then per hidden Dense ("relu,relu,relu,tanh")

cnn_bn puts BatchNormalization after each conv and Dense (conv -> BN -> activation); cnn_dropout
puts Dropout after each pool and after the Dense layers, at DROPOUT_RATE unless given.
"""

import functools

import keras

from trainers.models import MODELS
from trainers.models.common import (
    activations_problem,
    no_layers_if_zero,
    per_layer,
    size_problem,
    widths_problem,
    with_head,
)

WIDTHS = (32, 64, 64)
DENSE_WIDTHS = (64,)
PADDINGS = ("valid", "same")
DROPOUT_RATE = 0.25
MEANING = "the convs' filters, any number; the Dense units after them are --dense_widths"


def pool_positions(pool, convs: int) -> tuple:
    """The conv numbers (from 1) followed by a max-pool: `pool` '' or None after every conv but the
    last, 'every', 'none', "1,3" or a sequence of ints."""
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


def feature_size(s, *, convs, same, pools):
    """The spatial size after the conv stack (< 1: the images are too small for it)."""
    for i in range(1, convs + 1):
        s = s if same else s - 2
        if s < 1:
            return s
        if i in pools:
            s //= 2
    return s


def check(
    name,
    image_size=None,
    widths=None,
    dense_widths=None,
    padding=None,
    pool=None,
    activation=None,
    **options,
):
    widths = WIDTHS if widths is None else widths
    problem = widths_problem(name, widths, WIDTHS, MEANING)
    if problem:
        return "widths", problem
    dense_widths = DENSE_WIDTHS if dense_widths is None else dense_widths
    if widths_problem(name, dense_widths, DENSE_WIDTHS, "", zero_means_none=True):
        return (
            "dense_widths",
            "--dense_widths takes positive widths, or 0 for no hidden Dense layer",
        )
    if padding and padding not in PADDINGS:
        return "padding", f"--padding={padding}: one of {', '.join(PADDINGS)}"
    convs, dense = len(widths), len(no_layers_if_zero(dense_widths))
    if activation:
        what = f"layers ({convs} convs + {dense} Dense)"
        problem = activations_problem(name, activation, convs + dense, what)
        if problem:
            return "activation", problem
    try:
        pools = pool_positions(pool, convs)
    except ValueError as err:
        return "pool", str(err)
    size = functools.partial(feature_size, convs=convs, same=padding == "same", pools=pools)
    hint = (
        ""
        if padding == "same"
        else (" (--padding=same keeps the size; fewer --widths or pools shrink it less)")
    )
    problem = size_problem(name, image_size, size, hint)
    return ("input_shape", problem) if problem else None


def _cnn(layers, input_shape, num_classes, *, name, dropout, freeze_backbone, seed, **options):
    widths = tuple(int(w) for w in options.get("widths", WIDTHS))
    dense_widths = no_layers_if_zero(options.get("dense_widths", DENSE_WIDTHS))
    padding = options.get("padding") or "valid"
    pools = pool_positions(options.get("pool"), len(widths))
    activations = per_layer(options.get("activation") or "relu", len(widths) + len(dense_widths))
    batchnorm = options.get("batchnorm", name == "cnn_bn")
    if name == "cnn_dropout" and not dropout:
        dropout = DROPOUT_RATE
    inputs = keras.Input(shape=input_shape, name=layers.name("images"))
    x = inputs
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
        x = layers.activation(activations[i - 1], f"conv{i}_act")(x)
        if i in pools:
            x = keras.layers.MaxPooling2D(2, name=layers.name(f"pool{i}"))(x)
            if dropout:
                x = layers.dropout(dropout, f"pool{i}_dropout")(x)
    x = keras.layers.Flatten(name=layers.name("flatten"))(x)
    for j, units in enumerate(dense_widths, start=1):
        dense = "dense" if len(dense_widths) == 1 else f"dense{j}"
        x = layers.dense(units, dense, use_bias=not batchnorm)(x)
        if batchnorm:
            x = layers.batchnorm(f"{dense}_bn")(x)
        x = layers.activation(activations[len(widths) + j - 1], f"{dense}_act")(x)
        if dropout:
            x = layers.dropout(dropout, f"{dense}_dropout")(x)
    return with_head(inputs, x, layers, num_classes, name=name, freeze_backbone=freeze_backbone)


for _name in ("cnn", "cnn_bn", "cnn_dropout"):
    MODELS.register(
        _name,
        takes=("widths", "activation", "batchnorm", "dense_widths", "padding", "pool"),
        check=check,
        widths=WIDTHS,
        widths_meaning=MEANING,
    )(_cnn)
