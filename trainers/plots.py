"""`--plot`: curves.png (loss on a log scale and accuracy per epoch, the train steps and each
evaluated split; rewritten at each evaluation), for conv models activations.png (the first conv
layers' feature maps for a few test images), and with --predictions the confusion matrix and the
most confidently wrong test images."""

import json
import os

import keras
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from absl import logging


def _pyplot():
    matplotlib.use("Agg")

    return plt


def write_plots(model_dir: str, model, sample_images: np.ndarray, **curve_options) -> list[str]:
    """curves.png and activations.png after a run. A plot that fails is one warning line, never a
    failed run (the model is trained and saved). On a TPU the activations are skipped: their probe
    runs the model eagerly on the host, where TPU VM builds of TensorFlow cannot run its XLA kernels
    (GELU)."""
    written = [_safely("curves.png", write_curves, model_dir, **curve_options)]
    if _on_tpu():
        logging.warning("plots: no activations.png on a TPU (its probe would run XLA on the host)")
    else:
        written.append(
            _safely("activations.png", write_activations, model_dir, model, sample_images)
        )
    return [path for path in written if path]


def _safely(name: str, write, *args, **kwargs) -> str | None:
    try:
        return write(*args, **kwargs)
    except Exception as err:  # a plot is a by-product: the finished run stands
        first = (str(err).splitlines() or [""])[0]
        logging.warning("plots: no %s: %s: %s", name, type(err).__name__, first)
        return None


def _on_tpu() -> bool:
    return bool(tf.config.list_logical_devices("TPU"))


def write_curves(model_dir: str, metrics=("loss", "accuracy"), splits=None) -> str:
    """curves.png from history.json, one panel per metric: the train steps' epoch means drawn at
    mid-epoch (x = epoch - 0.5, the mean over that epoch), one line per evaluated split at the
    epoch's end (epoch 0: --eval_at_start); the loss on a log scale. `splits`: the evaluated splits
    (default: those with a <split>_loss column). Rewritten at each evaluation with --plot."""
    plt = _pyplot()
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    epochs = np.asarray(history["epoch"], dtype=float)
    if splits is None:
        splits = [
            key[: -len("_loss")] for key in history if key.endswith("_loss") and key != "reg_loss"
        ]
    metrics = [m for m in metrics if m in history or any(f"{s}_{m}" in history for s in splits)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):  # the triplet trainer: ("loss", "triplet_accuracy")
        lines = [(metric, "train steps (epoch mean)", epochs - 0.5)]
        lines += [
            (f"{split}_{metric}", "train set (evaluated)" if split == "train" else split, epochs)
            for split in splits
        ]
        for key, label, x in lines:
            values = np.asarray(
                history.get(key, []), dtype=float
            )  # None (no train steps yet) -> NaN
            shown = np.isfinite(values)
            if shown.any():
                ax.plot(x[shown], values[shown], marker="o", label=label)
        if metric.endswith("loss") and _all_positive(history, [key for key, _, _ in lines]):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(model_dir, "curves.png")
    fig.savefig(f"{path}.tmp.png", dpi=100)  # then renamed: a viewer never reads half a file
    os.replace(f"{path}.tmp.png", path)
    plt.close(fig)
    return path


def _all_positive(history: dict, keys) -> bool:
    values = [v for key in keys for v in history.get(key, []) if v is not None]
    return bool(values) and min(values) > 0


def write_confusion_matrix(
    model_dir: str,
    confusion: np.ndarray,
    class_names=None,
    name: str = "confusion_matrix.png",
    title: str = "test set",
) -> str:
    """confusion[true, predicted] counts as an image, each row normalised (the diagonal is per-class
    accuracy), with the counts written in the cells when there are at most 20 classes."""
    plt = _pyplot()
    n = len(confusion)
    names = (
        list(class_names)
        if class_names is not None and len(class_names) == n
        else [str(i) for i in range(n)]
    )
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(confusion[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black",
                    )
    ticks = range(n) if n <= 30 else range(0, n, max(1, n // 20))
    ax.set_xticks(list(ticks), [names[i] for i in ticks], rotation=90 if n > 10 else 0, fontsize=7)
    ax.set_yticks(list(ticks), [names[i] for i in ticks], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({title}, {int(confusion.sum())} examples)")
    fig.tight_layout()
    path = os.path.join(model_dir, name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_image_grid(
    model_dir: str, images: np.ndarray, titles, name: str, suptitle: str, columns: int = 8
) -> str:
    """Images in a grid, each with its title (uint8 or float in [0, 1]; one channel drawn in
    grey)."""
    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        image = image if image.dtype == np.uint8 else np.clip(image, 0, 1)
        ax.imshow(
            image.squeeze(-1) if image.shape[-1] == 1 else image,
            cmap="gray" if image.shape[-1] == 1 else None,
        )
        ax.set_title(title, fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    path = os.path.join(model_dir, name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_activations(
    model_dir: str,
    model,
    sample_images: np.ndarray,
    *,
    layers: int = 2,
    images: int = 4,
    maps: int = 8,
) -> str | None:
    """Feature maps of the first `layers` Conv2D layers for `images` test images; None for no convs,
    and for a subclassed model (its call() is Python: no graph of layers whose outputs a probe could
    read)."""
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][:layers]
    if not convs:
        return None
    if (
        getattr(model, "inputs", None) is None
    ):  # Functional overrides call() too: ask for the graph's inputs
        logging.info(
            "plots: no activations.png: %s is a subclassed model, whose layers' outputs cannot be "
            "read without running its call()",
            type(model).__name__,
        )
        return None
    probe = keras.Model(model.inputs, [layer.output for layer in convs])
    x = sample_images[:images].astype(np.float32)
    x = x / 255.0 if sample_images.dtype == np.uint8 else x
    outputs = probe(x, training=False)
    outputs = [
        np.asarray(o, dtype=np.float32)
        for o in (outputs if isinstance(outputs, list) else [outputs])
    ]
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
