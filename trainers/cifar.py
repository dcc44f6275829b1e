"""CIFAR-10 / CIFAR-100: `python -m trainers.cifar [--strategy=mirrored] [--recipe=fast|full]`.

The recipe follows the CIFAR-10 speed records (Page's ResNet-9, airbench): a ResNet-9 with
BatchNorm, Nesterov SGD with a one-cycle LR, label smoothing 0.2, flip + crop (+ cutout) done on the
device inside the step, and test-time augmentation (mirror). `fast` is sized for a 2-core CPU
(`make train`); `full` is the longer GPU/TPU recipe (bf16). Learning rates are per the batch given.
"""
from trainers import cli

DEFAULTS = dict(dataset="cifar10", model="resnet9", optimizer="sgd", nesterov=True, momentum=0.9,
                label_smoothing=0.2, lr_schedule="onecycle", warmup_fraction=0.25, tta=True,
                checkpoint_every=0)

RECIPES = {
    # A 2-core CPU in about 15 minutes: a narrower ResNet-9, fewer epochs, lighter augmentation.
    "fast": dict(widths=(32, 64, 128, 256), global_batch_size=256, epochs=8, learning_rate=0.4,
                 weight_decay=5e-5, augment="flip_crop", mixed_precision="none"),
    # A GPU/TPU: the full-width ResNet-9, longer, with cutout; bf16 compute.
    "full": dict(widths=(64, 128, 256, 512), global_batch_size=512, epochs=24, learning_rate=0.4,
                 weight_decay=5e-5, augment="standard", mixed_precision="bf16"),
}

if __name__ == "__main__":
    cli.main("cifar", DEFAULTS, recipes=RECIPES)
