"""Triplet data: triplets from class labels, and the Facial Expression Comparison (FEC) layout.

FEC layout: a CSV file with header

    face1,face2,face3,votes1,votes2,votes3,subset

one row per triplet, and a folder holding `{id}.jpg` for every face id:
  faceK   the id of face K (its image is `{image_dir}/{faceK}.jpg`).
  votesK  how many annotators picked face K as the ODD ONE OUT, i.e. voted that the two other faces
          are the most similar pair. Counts or fractions: only their ratios matter.
  subset  which split the row belongs to, e.g. train or test.

`read_fec_rows` reads and checks the CSV (every column, every image file present) before anything
trains; `FECTriplets` streams its rows: each row's three images are read and decoded in the tf.data
map (parallel calls), as uint8 [3, H, W, C] with the vote shares votesK / sum(votes) [3], in CSV
column order. It is an IndexedSource (framework/streamed_source.py): the order is a function of
(seed, epoch) over the rows, a resume at step S is exact, and memory is bounded whatever the CSV's
size. `load_fec` decodes a split into memory in the (I1, I2, I3) order: (I1, I2) the most similar
pair, I3 the odd one out (the face with the most votes, the first of them on a tie), weight
max(votes) / sum(votes).
"""

import csv
import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from framework.data import streaming
from framework.data.datasets import DataError
from framework.data.image_folder import unreadable_file_message
from framework.streamed_source import IndexedSource

FEC_COLUMNS = ("face1", "face2", "face3", "votes1", "votes2", "votes3", "subset")


class FECDataError(DataError):
    """A bad FEC CSV or image file (a ValueError): the message names the file, the line and the fix.
    The trainers' command line prints it as one line and exits 2."""


class FECFileNotFoundError(FECDataError, FileNotFoundError):
    """A missing FEC CSV, image folder or image file."""


def make_class_triplets(x, y, num_triplets, seed):
    """Samples triplets from class labels: returns index arrays (a, b, c), each (num_triplets,)
    int64.

    y[a] == y[b], a != b, and y[c] != y[a], so (x[a], x[b], x[c]) is an (I1, I2, I3) triplet. The
    anchor `a` is uniform over the examples whose class has at least 2 members (so classes are drawn
    in proportion to their size), `b` uniform over the rest of a's class, `c` uniform over all other
    classes. `seed` is an int (deterministic) or None.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"`y` must be a 1-D array of class labels, got shape {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"`x` and `y` must have the same length, got {len(x)} and {len(y)}")
    if (
        isinstance(num_triplets, bool)
        or not isinstance(num_triplets, (int, np.integer))
        or num_triplets < 0
    ):
        raise ValueError(f"`num_triplets` ({num_triplets!r}) must be a non-negative integer")
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(counts) < 2:
        raise ValueError(f"`y` needs at least 2 classes to make triplets, got {len(counts)}")
    eligible = np.flatnonzero(counts[inverse] >= 2)
    if not len(eligible):
        raise ValueError("`y` needs a class with at least 2 examples to make triplets")

    rng = np.random.default_rng(seed)
    # Example indices grouped by class: class k occupies order[starts[k]:starts[k] + counts[k]].
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty_like(order)
    position[order] = np.arange(len(order))

    a = rng.choice(eligible, size=num_triplets)
    cls = inverse[a]
    start, count = starts[cls], counts[cls]
    # b: one of the other count - 1 members of a's class (skip over a's own slot).
    r = rng.integers(0, count - 1)
    r += r >= position[a] - start
    b = order[start + r]
    # c: one of the len(y) - count examples outside a's class (skip over a's class block).
    r = rng.integers(0, len(y) - count)
    r += np.where(r >= start, count, 0)
    c = order[r]
    return a.astype(np.int64), b.astype(np.int64), c.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class FECRows:
    """The rows of one split: image paths (n, 3) str, odd-one-out vote shares (n, 3) float32
    (summing to 1), and each row's line in the CSV (for messages)."""

    paths: np.ndarray
    shares: np.ndarray
    lines: tuple

    def __len__(self):
        return len(self.shares)

    def take(self, index) -> "FECRows":
        return FECRows(self.paths[index], self.shares[index], tuple(np.asarray(self.lines)[index]))


def read_fec_rows(csv_path, image_dir, *, subset="train") -> FECRows:
    """Reads and checks an FEC-layout CSV (see the module docstring) without decoding any image: the
    folder, the columns, every row, and that every image file exists (all reported together).

    Raises FECDataError (a ValueError and the datasets' DataError) naming the file and line, or
    FECFileNotFoundError (also a FileNotFoundError) for a missing CSV, folder or image.
    """
    if not os.path.isdir(image_dir):
        raise FECFileNotFoundError(
            f"FEC image folder {image_dir} not found (expected {{id}}.jpg files)"
        )
    faces, votes, lines = _read_fec_csv(csv_path, subset)
    ids, index = np.unique(faces, return_inverse=True)
    index = index.reshape(faces.shape)
    paths = np.array([os.path.join(image_dir, f"{face}.jpg") for face in ids])
    missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        where = []
        for i in missing[:5]:
            row, column = np.argwhere(index == i)[0]
            where.append(f"{paths[i]} (face{column + 1} on line {lines[row]} of {csv_path})")
        raise FECFileNotFoundError(
            f"{len(missing)} FEC image file(s) not found: {'; '.join(where)}"
            f"{' ...' if len(missing) > 5 else ''}. Put the {{id}}.jpg files in {image_dir} or "
            f"remove those rows from the CSV."
        )
    shares = (votes / votes.sum(axis=1, keepdims=True)).astype(np.float32)
    return FECRows(paths[index], shares, tuple(lines))


class FECTriplets(IndexedSource):
    """FEC rows as a streamed source: example i is (uint8 images [3, H, W, C] of row i's faces, in
    column order, and its vote shares [3]), read and decoded in the tf.data map
    (framework/data/streaming.py)."""

    def __init__(
        self,
        rows: FECRows,
        image_shape,
        *,
        on_corrupt: str = "fail",
        max_image_pixels: int = 89_478_485,
        skipped: streaming.SkippedFiles | None = None,
    ):
        self.rows = rows
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_examples = len(rows)
        self.example_spec = (
            tf.TensorSpec((3, *self.image_shape), tf.uint8),
            tf.TensorSpec([3], tf.float32),
        )
        self.skips_unreadable = on_corrupt == "skip"
        self.on_corrupt, self.max_image_pixels = on_corrupt, max_image_pixels
        self.files = tuple(
            dict.fromkeys(np.asarray(rows.paths).reshape(-1).tolist())
        )  # each image once
        self.checked = streaming.checks_each_file(
            self.files, on_corrupt, self.image_shape, max_image_pixels
        )
        self.skipped = skipped if skipped is not None else streaming.SkippedFiles()
        with tf.device("/cpu:0"):
            self._paths, self._shares = tf.constant(rows.paths), tf.constant(rows.shares)

    def load_example(self, index):
        paths = tf.gather(self._paths, index)
        images, readable = zip(
            *(
                streaming.decode_image_file(
                    paths[k],
                    self.image_shape,
                    on_corrupt=self.on_corrupt,
                    max_image_pixels=self.max_image_pixels,
                    skipped=self.skipped,
                    checked=self.checked,
                )
                for k in range(3)
            )
        )
        return (tf.stack(images), tf.gather(self._shares, index)), tf.reduce_all(tf.stack(readable))

    def example_files(self, index: int) -> list[str]:
        return [str(p) for p in self.rows.paths[index]]

    @property
    def decoded_bytes(self) -> int:
        return self.num_examples * 3 * int(np.prod(self.image_shape))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every row decoded into memory: (uint8 triplets [n, 3, H, W, C], shares [n, 3])."""
        try:
            return self.head(self.num_examples)
        except tf.errors.InvalidArgumentError as e:
            text = " ".join(e.message.split())
            found = re.search(r"([^\s\[]+: " + streaming.CORRUPT_MARK + r": [^.\]]*)", text)
            if found:
                raise FECDataError(f"{found.group(1)}; replace or remove it") from None
            found = unreadable_file_message(
                e, [self]
            )  # a decoder's error (unchecked files) names none
            if found:
                raise FECDataError(
                    found.split(". Fix or remove it")[0] + "; replace or remove it"
                ) from None
            raise FECDataError(
                f"an FEC image could not be decoded ({text[:300]}); replace or remove it"
            ) from None


def load_fec(csv_path, image_dir, *, image_size=(64, 64), subset="train", channels=3):
    """Reads an FEC-layout CSV (see module docstring) and its images into memory.

    Args:
      csv_path: the CSV file.
      image_dir: the folder of `{id}.jpg` files.
      image_size: (height, width) or an int; images are resized (bilinear, antialiased) to it.
      subset: keep only rows whose `subset` is this; None keeps every row.
      channels: 3 (RGB) or 1 (grey).

    Returns:
      x1, x2, x3: float32 arrays (n, height, width, channels) in [0, 1], ordered (I1, I2, I3).
      votes: float32 array (n,), the top vote fraction of each triplet.

    Raises:
      FECDataError (a ValueError and the datasets' DataError) naming the file and line of a bad CSV
      or image; FECFileNotFoundError (also a FileNotFoundError) for a missing one.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if len(image_size) != 2 or any(int(s) < 1 for s in image_size):
        raise ValueError(f"`image_size` ({image_size!r}) must be a positive int or (height, width)")
    if channels not in (1, 3):
        raise ValueError(f"`channels` ({channels!r}) must be 1 or 3")
    rows = read_fec_rows(csv_path, image_dir, subset=subset)
    triplets, shares = FECTriplets(rows, (*image_size, channels)).arrays()
    top = shares.argmax(axis=1)  # the odd one out
    n = np.arange(len(top))
    # The two faces other than `top`, in column order: (1, 2) for top 0, (0, 2) for 1, (0, 1) for 2.
    first = np.where(top == 0, 1, 0)
    second = np.where(top == 2, 1, 2)
    x1, x2, x3 = (triplets[n, k].astype(np.float32) / 255.0 for k in (first, second, top))
    return x1, x2, x3, shares[n, top]


def _read_fec_csv(csv_path, subset):
    """Returns face ids (n, 3) str, votes (n, 3) float64, and each row's line number in the file."""
    if not os.path.isfile(csv_path):
        raise FECFileNotFoundError(f"FEC CSV file {csv_path} not found")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in FEC_COLUMNS if c not in header]
        if missing:
            raise FECDataError(
                f"{csv_path}: missing column(s) {', '.join(missing)}; the header must "
                f"name {','.join(FEC_COLUMNS)} (found: {','.join(header) or 'none'})"
            )
        reader.fieldnames = header
        faces, votes, lines, subsets = [], [], [], set()
        for row in reader:
            subsets.add(row["subset"])
            if subset is not None and row["subset"] != subset:
                continue
            line = reader.line_num
            face_ids = [(row[f"face{k}"] or "").strip() for k in (1, 2, 3)]
            if not all(face_ids):
                raise FECDataError(
                    f"{csv_path}, line {line}: face1, face2 and face3 must all be "
                    f"non-empty ids, got {face_ids}"
                )
            try:
                row_votes = [float(row[f"votes{k}"]) for k in (1, 2, 3)]
            except (TypeError, ValueError):
                row_votes = None
            if row_votes is None or min(row_votes) < 0 or not sum(row_votes) > 0:
                raise FECDataError(
                    f"{csv_path}, line {line}: votes1, votes2, votes3 must be non-negative numbers "
                    f"with a positive sum, got {[row[f'votes{k}'] for k in (1, 2, 3)]}"
                )
            faces.append(face_ids)
            votes.append(row_votes)
            lines.append(line)
    if not faces:
        raise FECDataError(
            f"{csv_path}: no rows with subset {subset!r} (subsets present: "
            f"{', '.join(sorted(s for s in subsets if s is not None)) or 'none'})"
        )
    return np.array(faces, dtype=str), np.array(votes, dtype=np.float64), lines
