"""resnet9: the "ResNet-9" of the CIFAR-10 speed records (Page's DAWNBench net, airbench's
ancestor).

prep conv 64; layer1 conv 128 + pool + residual(2 conv); layer2 conv 256 + pool; layer3 conv 512 +
pool + residual; global max pool; Dense without bias; logits scaled by 1/8 (small initial logits,
as the speed-record recipes do). conv -> pool -> BN -> activation in every block.
"""

import keras

from trainers.models import MODELS
from trainers.models.common import staged_check, with_head

WIDTHS = (64, 128, 256, 512)
MEANING = "prep, layer1, layer2, layer3 channels"
LOGIT_SCALE = 0.125


# 3 max-pools before the global pool
check = staged_check(WIDTHS, MEANING, lambda s: s // 2 // 2 // 2)


@MODELS.register(
    "resnet9",
    takes=("widths", "activation", "batchnorm"),
    check=check,
    widths=WIDTHS,
    widths_meaning=MEANING,
)
def resnet9(layers, input_shape, num_classes, *, name, dropout, freeze_backbone, seed, **options):
    prep, width1, width2, width3 = (int(w) for w in options.get("widths", WIDTHS))
    activation = options.get("activation") or "relu"
    batchnorm = options.get("batchnorm", True)
    inputs = keras.Input(shape=input_shape, name=layers.name("images"))
    block = layers.conv_block
    x = block(inputs, prep, "prep", activation, batchnorm)
    for block_name, width, residual in (
        ("layer1", width1, True),
        ("layer2", width2, False),
        ("layer3", width3, True),
    ):
        x = block(x, width, block_name, activation, batchnorm, pool=True)
        if residual:
            y = block(x, width, f"{block_name}_res1", activation, batchnorm)
            y = block(y, width, f"{block_name}_res2", activation, batchnorm)
            x = keras.layers.Add(name=layers.name(f"{block_name}_add"))([x, y])
    x = keras.layers.GlobalMaxPooling2D(name=layers.name("global_pool"))(x)
    if dropout:
        x = layers.dropout(dropout, "dropout")(x)
    return with_head(
        inputs,
        x,
        layers,
        num_classes,
        name=name,
        logit_scale=LOGIT_SCALE,
        freeze_backbone=freeze_backbone,
    )
