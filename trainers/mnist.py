"""MNIST digits: `python -m trainers.mnist` (the classic small CNN, a few epochs on a CPU).

Its defaults (trainers/recipes.py, printed at start): Adam 1e-3, batch 128, 3 epochs, and a cosine
LR with 2% linear warm-up (Keras' default would be a constant LR).
"""

from trainers import cli

if __name__ == "__main__":
    cli.main("mnist")
