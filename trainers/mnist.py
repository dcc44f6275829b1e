"""MNIST digits: `python -m trainers.mnist` (the classic small CNN, a few epochs on a CPU)."""
from trainers import cli

DEFAULTS = dict(dataset="mnist", model="cnn", optimizer="adam", learning_rate=1e-3, epochs=3,
                global_batch_size=128, lr_schedule="cosine", warmup_fraction=0.02)

if __name__ == "__main__":
    cli.main("mnist", DEFAULTS)
