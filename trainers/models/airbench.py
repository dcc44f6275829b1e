"""airbench: airbench94's net (trainers/airbench_net.py): frozen patch-whitening conv, 3 conv groups
(64, 256, 256) with GELU and scale-free BatchNorm, logits scaled by 1/9. `whitening_images` (a few
thousand training images) set the whitening conv; None leaves it random (e.g. before restoring)."""

import keras

from trainers import airbench_net
from trainers.models import MODELS
from trainers.models.common import activations_problem, size_problem, widths_problem, with_head

MEANING = "conv group 1, 2, 3 channels"


def check(name, image_size=None, widths=None, activation=None, batchnorm=None, **options):
    default = airbench_net.DEFAULT_WIDTHS
    problem = widths_problem(name, widths or default, default, MEANING, count=len(default))
    if problem:
        return "widths", problem
    problem = activation and activations_problem(name, activation)
    if problem:
        return "activation", problem
    if batchnorm is False:
        return "batchnorm", "airbench always has BatchNorm"
    # 2x2 whitening, 3 pools, the final pool of 3
    problem = size_problem(name, image_size, lambda s: (s - 1) // 2 // 2 // 2 // 3)
    return ("input_shape", problem) if problem else None


@MODELS.register(
    "airbench",
    takes=("widths", "activation", "batchnorm", "whitening_images"),
    check=check,
    widths=airbench_net.DEFAULT_WIDTHS,
    widths_meaning=MEANING,
    whitening=airbench_net.WHITENING_IMAGES,
    # Its hyperparameters were tuned with PyTorch's init, smaller than Glorot.
    torch_init=True,
)
def airbench(layers, input_shape, num_classes, *, name, dropout, freeze_backbone, seed, **options):
    inputs = keras.Input(shape=input_shape, name=layers.name("images"))
    features, initialise = airbench_net.build_airbench(
        inputs,
        layers,
        tuple(int(w) for w in options.get("widths", airbench_net.DEFAULT_WIDTHS)),
        options.get("activation") or "gelu",
        dropout,
        options.get("whitening_images"),
    )
    return with_head(
        inputs,
        features,
        layers,
        num_classes,
        name=name,
        logit_scale=airbench_net.LOGIT_SCALE,
        initialise=initialise,
        freeze_backbone=freeze_backbone,
    )
