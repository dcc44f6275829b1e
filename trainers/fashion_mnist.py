"""Fashion-MNIST: `python -m trainers.fashion_mnist` (the MNIST recipe on clothing images)."""
from trainers import cli

DEFAULTS = dict(dataset="fashion_mnist", model="cnn_bn", optimizer="adam", learning_rate=1e-3, epochs=5,
                global_batch_size=128, lr_schedule="cosine", warmup_fraction=0.02, augment="flip,crop:padding=3")  # named policies skip flips on 1-channel images

if __name__ == "__main__":
    cli.main("fashion_mnist", DEFAULTS)
