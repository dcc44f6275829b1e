"""MNIST digits: `python -m trainers.mnist` (the classic small CNN, a few epochs on a CPU).

Its defaults (printed at start): Adam 1e-3, batch 128, 3 epochs, and a cosine LR with 2% linear
warm-up (Keras' default would be a constant LR).
"""

from trainers import cli, recipes
from trainers.experiment import ExperimentConfig, check_run_dir, run_experiment

# The small CNN's optimizer and schedule, shared with trainers/fashion_mnist.py.
CNN_ON_MNIST = dict(
    optimizer="adam",
    learning_rate=1e-3,
    global_batch_size=128,
    lr_schedule="cosine",
    warmup_fraction=0.02,
)
DEFAULTS = dict(dataset="mnist", model="cnn", epochs=3, **CNN_ON_MNIST)

recipes.register(
    "mnist",
    config=ExperimentConfig,
    run=run_experiment,
    defaults=DEFAULTS,
    check_run_dir=check_run_dir,
)

if __name__ == "__main__":
    cli.main("mnist")
