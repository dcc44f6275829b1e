"""airbench: airbench94's net (trainers/airbench_net.py): frozen patch-whitening conv, 3 conv groups
(64, 256, 256) with GELU and scale-free BatchNorm, logits scaled by 1/9. `whitening_images` (a few
thousand training images) set the whitening conv; None leaves it random (e.g. before restoring)."""

import keras

from trainers import airbench_net
from trainers.models import MODELS
from trainers.models.common import staged_check, with_head

MEANING = "conv group 1, 2, 3 channels"


# 2x2 whitening, 3 pools, the final pool of 3
_staged = staged_check(airbench_net.DEFAULT_WIDTHS, MEANING, lambda s: (s - 1) // 2 // 2 // 2 // 3)


def check(name, image_size=None, batchnorm=None, **options):
    if batchnorm is False:
        return "batchnorm", "airbench always has BatchNorm"
    return _staged(name, image_size=image_size, **options)


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
