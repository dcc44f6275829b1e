"""CIFAR-10 / CIFAR-100: `python -m trainers.cifar [--strategy=mirrored] [--recipe=fast|full]`.

Both recipes are airbench94's (Keller Jordan's CIFAR-10 speed record, trainers/airbench_net.py): the
net with a frozen patch-whitening first conv, Nesterov SGD (momentum 0.85) with a triangular LR,
label smoothing 0.2, flip + 2-pixel translate on the device inside the step, and test-time
augmentation (mirror + 1-pixel translate). The LR goes from 0.2x the peak up to it in 23% of the
steps, then down to 0.07x. airbench's lr 11.5 and weight decay 0.0153 for a summed
loss at batch 1024 are, for our mean loss and Keras' decoupled decay, lr 1.5 at batch 1024 (0.375
at 256: the same per-example step) and weight decay 0.009 per unit of LR.

  fast  For a CPU (`make train`, the default there): a time budget of training (--train_minutes),
        the net and its length chosen by the budget's ladder (trainers/time_budget.py): the speed is
        measured at 3/8 width (24, 96, 96), then the widest rung of widths x epochs that fits, from
        (24, 96, 96) x 10 up to (64, 256, 256) x 16; on a slow machine the first rung for as many
        steps as fit. --widths or --epochs turns the ladder off (then at most --epochs).
  full  airbench94 as published: full width, GELU, batch 1024, 10 epochs, lookahead every 5 steps
        (the default on a GPU/TPU).

The shared data is JPEG (quality 75, colour at half resolution), not the original pixels airbench94
reports on. Measured accuracy and time per machine: the README's table and benchmarks/reports/.
"""

from trainers import cli, recipes
from trainers.experiment import ExperimentConfig, check_run_dir, run_experiment

# airbench94's settings, translated to our mean loss and Keras' decoupled weight decay (above).
DEFAULTS = dict(
    dataset="cifar10",
    model="airbench",
    optimizer="sgd",
    nesterov=True,
    momentum=0.85,
    weight_decay=0.009,
    label_smoothing=0.2,
    lr_schedule="onecycle",
    warmup_fraction=0.23,
    onecycle_start=0.2,
    onecycle_end=0.07,
    augment="flip,crop:padding=2",
    tta=True,
    tta_translate=1,
    checkpoint_every=0,
    eval_every_epochs=0,
    mixed_precision="bf16_if_fast",  # resolved when the recipe is (recipes.AT_RUN_TIME)
)
RECIPES = {
    "fast": dict(
        widths=(24, 96, 96),
        activation="gelu",
        global_batch_size=256,
        learning_rate=0.375,
        epochs=10,
        train_minutes=11.0,
        steps_per_loop=25,
        budget_ladder=True,
    ),
    "full": dict(
        widths=(64, 256, 256),
        activation="gelu",
        global_batch_size=1024,
        learning_rate=1.5,
        epochs=10,
        steps_per_loop=49,
        lookahead_every=5,
    ),
}

recipes.register(
    "cifar",
    config=ExperimentConfig,
    run=run_experiment,
    defaults=DEFAULTS,
    recipes=RECIPES,
    check_run_dir=check_run_dir,
)

if __name__ == "__main__":
    cli.main("cifar")
