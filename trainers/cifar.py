"""CIFAR-10 / CIFAR-100: `python -m trainers.cifar [--strategy=mirrored] [--recipe=fast|full]`.

The recipe follows the CIFAR-10 speed records (Page's ResNet-9, airbench): a ResNet-9 with
BatchNorm, Nesterov SGD with a one-cycle LR, label smoothing 0.2, flip + crop (+ cutout) done on the
device inside the step, and test-time augmentation (mirror). `fast` is sized for a 2-core CPU
(`make train`); `full` is the longer GPU/TPU recipe (bf16). Learning rates are for the mean loss
over the batch given (Page's 0.4 at batch 512); decoupled weight decay 5e-3 per unit of LR matches
his coupled 5e-4 under momentum 0.9.
"""
from framework.precision import bf16_is_fast
from trainers import cli

DEFAULTS = dict(dataset="cifar10", model="resnet9", optimizer="sgd", nesterov=True, momentum=0.9,
                label_smoothing=0.2, lr_schedule="onecycle", warmup_fraction=0.25, tta=True,
                checkpoint_every=0)

RECIPES = {
    # A 2-core CPU in about 15 minutes: half-width ResNet-9, 7 epochs, flip + crop; bf16 where the CPU
    # has bf16 instructions (2.8x faster than float32 on an AVX512_BF16 CPU, measured).
    "fast": dict(widths=(32, 64, 128, 256), global_batch_size=512, epochs=7, learning_rate=0.4,
                 weight_decay=5e-3, augment="flip_crop",
                 mixed_precision="bf16" if bf16_is_fast() else "none"),
    # A GPU/TPU: the full-width ResNet-9, 24 epochs, flip + crop + cutout, bf16 compute.
    "full": dict(widths=(64, 128, 256, 512), global_batch_size=512, epochs=24, learning_rate=0.4,
                 weight_decay=5e-3, augment="standard", mixed_precision="bf16" if bf16_is_fast() else "none"),
}

if __name__ == "__main__":
    cli.main("cifar", DEFAULTS, recipes=RECIPES)
