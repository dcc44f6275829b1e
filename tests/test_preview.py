"""python -m augment.preview on an image folder (before/after the policy, per class), and
python -m trainers.fec_preview on FEC triplets."""

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from augment import preview
from tests.test_triplet import ROWS, _write_fec_sample
from trainers import fec_preview

PNG = b"\x89PNG\r\n\x1a\n"


def _run(args, command=preview):
    fv = flags.FlagValues()
    command.define_flags(fv)
    fv(["preview", *args])
    command.main(["preview"], fv)


def _grid(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG
    return matplotlib.image.imread(path).shape[:2]


@pytest.fixture
def folder(tmp_path, cifar):
    """Three CIFAR-10 test images of each of two classes, as PNG files in class folders."""
    for label, name in ((3, "cat"), (5, "dog")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(cifar.y_test == label)[:3]):
            (tmp_path / "pets" / name / f"{k}.png").write_bytes(
                tf.io.encode_png(cifar.x_test[i]).numpy()
            )
    return tmp_path / "pets"


@pytest.mark.slow
def test_image_folder_preview_has_a_row_per_class_before_and_after(tmp_path, folder):
    out = tmp_path / "folder.png"
    _run(
        [
            f"--image_folder={folder}",
            "--augment=flip,cutout:size=12",
            "--per_class=3",
            f"--out={out}",
        ]
    )
    assert _grid(out) == (310, 720)  # 2 classes x (3 originals + 3 augmented), 100 dpi


def test_fec_preview_draws_three_faces_per_triplet(tmp_path):
    csv_path, image_dir = _write_fec_sample(tmp_path, ROWS)
    out = tmp_path / "fec.png"
    _run(
        [
            f"--fec_csv={csv_path}",
            f"--fec_images={image_dir}",
            "--rows=3",
            "--image_size=24",
            f"--out={out}",
        ],
        fec_preview,
    )
    assert _grid(out) == (490, 420)  # 3 triplets x 3 faces


def test_preview_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        _run(
            [
                f"--fec_csv={tmp_path / 'none.csv'}",
                f"--fec_images={tmp_path}",
                f"--out={tmp_path / 'x.png'}",
            ],
            fec_preview,
        )
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "none.csv not found" in err and "\n" not in err
