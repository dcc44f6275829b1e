"""mlp: Flatten + Dense(widths) with `activation`; optional BatchNorm / Dropout. Any number of
hidden layers: widths=(0,) (--widths=0) or () is none, a linear model. Also takes flat (features,)
inputs."""

import keras

from trainers.models import MODELS
from trainers.models.common import (
    activations_problem,
    no_layers_if_zero,
    per_layer,
    widths_problem,
    with_head,
)

WIDTHS = (64, 64)
MEANING = "hidden Dense units, any number of layers"


def check(name, image_size=None, widths=None, activation=None, **options):
    widths = WIDTHS if widths is None else widths
    problem = widths_problem(name, widths, WIDTHS, MEANING, zero_means_none=True)
    if problem:
        return "widths", problem
    if activation:
        layers = len(no_layers_if_zero(widths))
        problem = activations_problem(name, activation, layers, "hidden layers")
        if problem:
            return "activation", problem
    return None


@MODELS.register(
    "mlp",
    takes=("widths", "activation", "batchnorm"),
    check=check,
    widths=WIDTHS,
    widths_meaning=MEANING,
    flat_input=True,
)
def mlp(layers, input_shape, num_classes, *, name, dropout, freeze_backbone, seed, **options):
    widths = tuple(int(w) for w in no_layers_if_zero(options.get("widths", WIDTHS)))
    activations = per_layer(options.get("activation") or "relu", len(widths))
    batchnorm = options.get("batchnorm", False)
    inputs = keras.Input(shape=input_shape, name=layers.name("images"))
    x = keras.layers.Flatten(name=layers.name("flatten"))(inputs)
    for i, (units, activation) in enumerate(zip(widths, activations), start=1):
        x = layers.dense(units, f"dense{i}", use_bias=not batchnorm)(x)
        if batchnorm:
            x = layers.batchnorm(f"dense{i}_bn")(x)
        x = layers.activation(activation, f"dense{i}_act")(x)
        if dropout:
            x = layers.dropout(dropout, f"dense{i}_dropout")(x)
    return with_head(inputs, x, layers, num_classes, name=name, freeze_backbone=freeze_backbone)
