"""Writes a PNG of FEC triplets: each row a triplet's three faces in CSV order, each with the share
of annotators who picked it as the odd one out (the majority's odd one marked). See the data a
triplet run trains on before training.

    python -m trainers.fec_preview --fec_csv=FILE --fec_images=DIR --rows=6 --out=triplets.png

It lives beside the FEC data (trainers/fec_data.py), not in augment/: augment draws any image
batch and knows no trainer; this module uses its drawing helpers.
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

from augment import preview  # noqa: E402
from framework import config_flags  # noqa: E402
from framework.config import option  # noqa: E402

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True, kw_only=True)
class FECPreviewConfig:
    fec_csv: str = option("", "The FEC CSV (face1, face2, face3, votes1..3, subset).")
    fec_images: str = option("", "The folder of the FEC CSV's {id}.jpg faces.")
    out: str = option("fec_preview.png", "Output PNG path.")
    rows: int = option(6, "Triplets (rows) to show.")
    image_size: int = option(0, "Resize faces to this (0: 96).")
    seed: int = option(0, "Picks the triplets.")
    verbose: bool = option(
        False, "Show TensorFlow's start-up and C++ info lines (hidden by default)."
    )


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defined only when run as a program (or into a FlagValues a test passes)."""
    config_flags.define_flags(FECPreviewConfig, flag_values=flag_values, key_module="__main__")


def write_fec_preview(
    *, csv_path: str, image_dir: str, out: str, rows: int = 6, image_size: int = 0, seed: int = 0
) -> str:
    """`rows` FEC training triplets: the three faces, each with its odd-one-out vote share; writes
    `out`."""
    from trainers import fec_data  # lazy: keeps TF out of --help

    if rows < 1:
        raise ValueError(f"`rows` ({rows}) must be positive")
    table = fec_data.read_fec_rows(csv_path, image_dir, subset=None)
    pick = np.sort(
        np.random.default_rng(seed).choice(len(table), size=min(rows, len(table)), replace=False)
    )
    size = image_size or 96
    faces, shares = fec_data.FECTriplets(table.take(pick), (size, size, 3)).arrays()
    fig = Figure(figsize=(4.2, 1.5 * len(pick) + 0.4), dpi=100)
    axes = fig.subplots(len(pick), 3, squeeze=False)
    for r, row in enumerate(axes):
        odd = int(np.argmax(shares[r])) if shares[r].max() > 0.5 else None
        for k, ax in enumerate(row):
            preview.show_image(ax, faces[r, k])
            ax.set_xlabel(
                f"odd one: {shares[r, k]:.0%}" + (" (majority)" if k == odd else ""),
                fontsize=6,
                color="crimson" if k == odd else "black",
            )
        row[0].set_ylabel(f"line {table.lines[pick[r]]}", fontsize=6)
    fig.suptitle(
        "FEC triplets: share of annotators who picked each face as the odd one out", fontsize=7
    )
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = config_flags.from_flags(FECPreviewConfig, flag_values=flag_values)
    if not (config.fec_csv and config.fec_images):
        print("error: --fec_csv and --fec_images go together", file=sys.stderr)
        sys.exit(2)
    preview.write_and_report(
        write_fec_preview,
        csv_path=config.fec_csv,
        image_dir=config.fec_images,
        out=config.out,
        rows=config.rows,
        image_size=config.image_size,
        seed=config.seed,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
