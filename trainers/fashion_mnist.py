"""Fashion-MNIST: `python -m trainers.fashion_mnist` (the MNIST recipe on clothing images).

Its defaults: the MNIST trainer's, with cnn_bn, 5 epochs and flip + 3-pixel crop.
"""

from trainers import cli, recipes
from trainers.experiment import ExperimentConfig, check_run_dir, run_experiment
from trainers.mnist import CNN_ON_MNIST

# Named policies skip flips on 1-channel images; this spec flips: clothes are left-right symmetric.
DEFAULTS = dict(
    dataset="fashion_mnist",
    model="cnn_bn",
    epochs=5,
    augment="flip,crop:padding=3",
    **CNN_ON_MNIST,
)

recipes.register(
    "fashion_mnist",
    config=ExperimentConfig,
    run=run_experiment,
    defaults=DEFAULTS,
    check_run_dir=check_run_dir,
)

if __name__ == "__main__":
    cli.main("fashion_mnist")
