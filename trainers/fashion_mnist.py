"""Fashion-MNIST: `python -m trainers.fashion_mnist` (the MNIST recipe on clothing images).

Its defaults (trainers/recipes.py): the MNIST trainer's, with cnn_bn, 5 epochs and flip + 3-pixel
crop.
"""

from trainers import cli

if __name__ == "__main__":
    cli.main("fashion_mnist")
