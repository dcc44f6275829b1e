"""Writes a PNG grid of augmented training images: see what a policy does before training with it.

    python -m augment.preview --dataset=cifar10 --augment=standard --out=grid.png [--data_dir=DIR]
        [--seed=0] [--rows=8] [--cols=8]
    python -m augment.preview --image_folder=PATH --augment=standard --per_class=4 --out=folder.png

An image folder (class-per-folder; its training split: train/, or for a flat folder the 80% the
trainers train on): one row per class, `per_class`
of its images as they are, then the same images after the policy (step 0), decoding only those
files. (FEC triplets and their votes: `python -m trainers.fec_preview`, beside the data they come
from.)

Row r shows one training image: the original in the first column, then the policy's output at steps
0..cols-1 (seed `step_seed(seed, step, replica 0)`, as a training run would draw them). Labels are
shown under augmented cells when the policy mixes samples (the two largest soft-label weights).
Data comes from `framework.data.datasets.load(dataset, data_dir)`, which looks in $DATA_DIR by
default.
"""

from __future__ import annotations

import dataclasses
import sys

# A command: TensorFlow's start-up lines hidden, as the trainers hide them.
if __name__ == "__main__":
    from framework.tf_startup import import_tensorflow

    import_tensorflow(verbose="--verbose" in sys.argv)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import augment  # noqa: E402
from framework import config_flags  # noqa: E402
from framework.config import option  # noqa: E402

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviewConfig:
    dataset: str = option("cifar10", "Dataset name for framework.data.datasets.load.")
    augment: str = option(
        "standard",
        "A named policy (none, flip_crop, standard, strong) or a spec like 'flip,crop:padding=4'.",
    )
    out: str = option("augment_preview.png", "Output PNG path.")
    data_dir: str | None = option(None, "Dataset folder (default: $DATA_DIR, then keras' folder).")
    seed: int = option(0, "Run seed: picks the images and the augmentation draws.")
    rows: int = option(8, "Images (rows) to show.")
    cols: int = option(8, "Augmented versions (columns) per image.")
    image_folder: str = option(
        "",
        "Draw this class-per-folder image folder instead of --dataset: --per_class "
        "images of each class, before and after --augment.",
    )
    per_class: int = option(4, "--image_folder: images shown per class.")
    image_size: int = option(
        0, "--image_folder: resize images to this (0: the folder's first image's size)."
    )
    verbose: bool = option(
        False, "Show TensorFlow's start-up and C++ info lines (hidden by default)."
    )


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defined only when run as a program (or into a FlagValues a test passes), so importing this
    module never clashes with a trainer's flags of the same names."""
    config_flags.define_flags(PreviewConfig, flag_values=flag_values, key_module="__main__")


def load_dataset(name: str, data_dir: str | None):
    """framework.data.datasets.load, imported late so this module imports without it (tests replace
    this)."""
    from framework.data import datasets  # lazy: keeps TF out of --help

    return datasets.load(name, data_dir=data_dir)


def augmented_columns(images: np.ndarray, labels: np.ndarray, policy, *, seed: int, cols: int):
    """[cols] lists of (float32 images [N, H, W, C] in [0, 1], labels) from uint8 `images`."""
    images = np.asarray(images, np.float32) / 255.0
    out = []
    for step in range(cols):
        x, y = policy(images, labels.astype(np.int32), augment.step_seed(seed, step, 0))
        out.append((np.clip(x.numpy(), 0.0, 1.0), y.numpy()))
    return out


def make_figure(
    images: np.ndarray, labels: np.ndarray, class_names, policy, *, seed: int, cols: int
):
    """A matplotlib Figure (no pyplot, so no global backend state): rows x (1 + cols) cells."""
    rows = len(images)
    columns = augmented_columns(images, labels, policy, seed=seed, cols=cols)
    gray = images.shape[-1] == 1
    fig = Figure(figsize=(1.2 * (cols + 1), 1.35 * rows + 0.4), dpi=100)
    axes = fig.subplots(rows, cols + 1, squeeze=False)
    for r in range(rows):
        cells = [(images[r] / 255.0, None)] + [(x[r], y[r]) for x, y in columns]
        for c, (img, label) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(
                img[..., 0] if gray else img,
                cmap="gray" if gray else None,
                vmin=0.0,
                vmax=1.0,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"step {c - 1}", fontsize=7)
            if c == 0:
                ax.set_ylabel(str(class_names[int(labels[r])]), fontsize=7)
            elif policy.soft_labels:
                top = [k for k in np.argsort(label)[::-1][:2] if label[k] >= 0.005]
                ax.set_xlabel(" ".join(f"{class_names[k]} {label[k]:.2f}" for k in top), fontsize=5)
    fig.suptitle(f"{policy.name}", fontsize=9)
    fig.tight_layout()
    return fig


def write_preview(
    *,
    dataset: str,
    augment_name: str,
    out: str,
    data_dir: str | None = None,
    seed: int = 0,
    rows: int = 8,
    cols: int = 8,
) -> str:
    """Loads `dataset`, augments `rows` random training images `cols` times, writes the grid to
    `out`."""
    if rows < 1 or cols < 1:
        raise ValueError(f"`rows` ({rows}) and `cols` ({cols}) must be positive")
    ds = load_dataset(dataset, data_dir)
    x, y = ds.x_train, np.asarray(ds.y_train)
    pick = np.sort(
        np.random.default_rng(seed).choice(len(x), size=min(rows, len(x)), replace=False)
    )
    policy = augment.get_policy(augment_name, num_classes=ds.num_classes, image_shape=x.shape[1:])
    fig = make_figure(x[pick], y[pick], ds.class_names, policy, seed=seed, cols=cols)
    fig.savefig(out, format="png")
    return out


def _hide_axes(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def show_image(ax, image):
    """One uint8 or [0, 1] float image in a cell."""
    image = np.asarray(image, np.float32) / (255.0 if np.asarray(image).dtype == np.uint8 else 1.0)
    gray = image.shape[-1] == 1
    ax.imshow(
        image[..., 0] if gray else image,
        cmap="gray" if gray else None,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    _hide_axes(ax)


def write_folder_preview(
    *,
    path: str,
    augment_name: str,
    out: str,
    per_class: int = 4,
    image_size: int = 0,
    seed: int = 0,
) -> str:
    """Image folder `path`: a row per class, `per_class` images before and after the policy; writes
    `out`."""
    from framework.data import image_folder  # lazy: keeps TF out of --help

    if per_class < 1:
        raise ValueError(f"`per_class` ({per_class}) must be positive")
    folder = image_folder.list_image_folder(path, image_size=image_size or None, seed=seed)
    train = folder.splits["train"]
    rng = np.random.default_rng(seed)
    pick = []
    for label in range(folder.num_classes):
        members = np.flatnonzero(train.labels == label)
        pick.extend(np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False)))
    x, y = train.subset(np.asarray(pick)).head(len(pick))
    policy = augment.get_policy(
        augment_name, num_classes=folder.num_classes, image_shape=x.shape[1:]
    )
    ((after, _),) = augmented_columns(x, y, policy, seed=seed, cols=1)
    fig = Figure(figsize=(1.2 * 2 * per_class, 1.3 * folder.num_classes + 0.5), dpi=100)
    axes = fig.subplots(folder.num_classes, 2 * per_class, squeeze=False)
    for label, row in enumerate(axes):
        mine = np.flatnonzero(y == label)
        for c, ax in enumerate(row):
            k = c % per_class
            if k < len(mine):
                show_image(ax, x[mine[k]] if c < per_class else after[mine[k]])
            else:
                ax.axis("off")
            if label == 0:
                ax.set_title("original" if c < per_class else policy.name, fontsize=7)
        row[0].set_ylabel(folder.class_names[label], fontsize=7)
    fig.suptitle(f"{folder.name}: before and after {policy.name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_flags.from_flags(PreviewConfig, flag_values=flag_values)
    if config.image_folder:
        write_and_report(
            write_folder_preview,
            path=config.image_folder,
            augment_name=config.augment,
            out=config.out,
            per_class=config.per_class,
            image_size=config.image_size,
            seed=config.seed,
        )
    else:
        write_and_report(
            write_preview,
            dataset=config.dataset,
            augment_name=config.augment,
            out=config.out,
            data_dir=config.data_dir,
            seed=config.seed,
            rows=config.rows,
            cols=config.cols,
        )


def write_and_report(write, **kwargs) -> None:
    """A preview command's end: `write(**kwargs)`, then "wrote PATH"; a bad file, folder or option
    (DataError, ValueError) is one line on stderr and exit 2."""
    from framework.data.datasets import DataError  # lazy: keeps TF out of --help

    try:
        path = write(**kwargs)
    except (DataError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


if __name__ == "__main__":
    if any(arg.startswith(("--fec_csv", "--fec_images")) for arg in sys.argv[1:]):
        # The FEC preview lives beside its data loader now: augment/ imports nothing from trainers/.
        print(
            "error: the FEC triplet preview moved: python -m trainers.fec_preview "
            "--fec_csv=F --fec_images=DIR (same flags)",
            file=sys.stderr,
        )
        sys.exit(2)
    define_flags()
    app.run(main)
