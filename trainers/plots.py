"""`--plot`: curves.png (loss and accuracy, train and eval, log-scaled step axis) and, for conv
models, activations.png (the first conv layers' feature maps for a few test images)."""
import json
import os

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plots(model_dir: str, model, sample_images: np.ndarray) -> list[str]:
    written = [write_curves(model_dir)]
    path = write_activations(model_dir, model, sample_images)
    if path:
        written.append(path)
    return written


def write_curves(model_dir: str, metrics=("loss", "accuracy")) -> str:
    plt = _pyplot()
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    steps = np.asarray(history["step"])
    eval_prefix = "val_" if "val_loss" in history else "test_"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, metrics):  # the triplet trainer: ("loss", "triplet_accuracy")
        for key, label in ((metric, "train"), (eval_prefix + metric, eval_prefix.rstrip("_"))):
            if key in history:
                ax.plot(steps, history[key], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("step (log scale)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(model_dir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_activations(model_dir: str, model, sample_images: np.ndarray, *, layers: int = 2,
                      images: int = 4, maps: int = 8) -> str | None:
    """Feature maps of the first `layers` Conv2D layers for `images` test images; None for no convs."""
    import keras
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][:layers]
    if not convs:
        return None
    probe = keras.Model(model.inputs, [layer.output for layer in convs])
    x = sample_images[:images].astype(np.float32)
    x = x / 255.0 if sample_images.dtype == np.uint8 else x
    outputs = probe(x, training=False)
    outputs = [np.asarray(o, dtype=np.float32) for o in (outputs if isinstance(outputs, list) else [outputs])]
    plt = _pyplot()
    rows = len(x) * len(convs)
    fig, axes = plt.subplots(rows, maps + 1, figsize=(1.2 * (maps + 1), 1.2 * rows), squeeze=False)
    for i in range(len(x)):
        for j, (layer, out) in enumerate(zip(convs, outputs)):
            row = axes[i * len(convs) + j]
            row[0].imshow(x[i].squeeze(), cmap="gray" if x.shape[-1] == 1 else None)
            row[0].set_ylabel(layer.name, fontsize=6)
            for k in range(maps):
                if k < out.shape[-1]:
                    row[k + 1].imshow(out[i, :, :, k], cmap="viridis")
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("first conv layers: feature maps (columns) per test image")
    fig.tight_layout()
    path = os.path.join(model_dir, "activations.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
