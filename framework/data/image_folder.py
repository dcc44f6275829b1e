"""Image folders: one sub-folder per class of JPEG/PNG files, the layout users keep their own data
in.

    PATH/train/<class>/*.jpg + PATH/test/<class>/*.jpg   the two splits as they are (and
    PATH/validation/,
                                                         where present, as the 'val' split)
    PATH/<class>/*.png                                   a seeded `test_split` fraction becomes the
                                                         test split

Class names are the sorted sub-folder names (those of train/ in the first layout); files may sit in
nested folders below a class folder; other file types and hidden files are ignored. Every image is
checked before it is decoded (a header larger than `max_image_pixels` is refused, so a huge file
cannot exhaust memory); a corrupt image stops loading with its path, or with on_corrupt="skip" is
skipped and counted. While streaming JPEGs with on_corrupt="fail", files are not checked one by one
(streaming.py says why): a decode error fails the run, and `find_unreadable` names the file.

Both split the folder in `list_splits`. `load_image_folder` decodes every image into memory;
`list_image_folder` lists the files only and returns sources that read and decode them in tf.data
while training (framework/data/streaming.py): the same splits, the order and exact resume of the
in-memory path, memory bounded whatever the size.
"""

import concurrent.futures
import dataclasses
import os
import re
import struct

import numpy as np
import tensorflow as tf
from absl import logging

from framework.data import streaming
from framework.data.datasets import ArrayDataset, DataError, resize_images, tf_error_text
from framework.streamed_source import IndexedSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb limit: about 256 MiB of RGB pixels
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class ImageFolderDataset(ArrayDataset):
    """An ArrayDataset read from an image folder; `skipped` lists "path: reason" per skipped corrupt
    image."""

    skipped: tuple[str, ...] = ()

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


class _BadImage(Exception):
    """A file that is not a readable JPEG/PNG image (reported or skipped according to
    `on_corrupt`)."""


def _visible(name):
    return not name.startswith(".")


def _list_images(path, class_names=None) -> tuple[tuple[str, ...], list[str], list[int]]:
    """(class_names, files, labels): files sorted by class, then by path."""
    if not os.path.isdir(path):
        raise DataError(
            f"{path}: image folder not found; pass --data_dir=PATH (a folder with one "
            f"sub-folder of images per class)"
        )
    found = sorted(
        d for d in os.listdir(path) if _visible(d) and os.path.isdir(os.path.join(path, d))
    )
    if class_names is None:
        class_names = tuple(found)
    elif set(found) - set(class_names):
        raise DataError(
            f"{path}: class folders {sorted(set(found) - set(class_names))} are not among the "
            f"training classes {list(class_names)}; both splits need the same class folders"
        )
    if not class_names:
        raise DataError(
            f"{path}: no class sub-folders; an image folder needs one sub-folder per class "
            f"(PATH/<class>/*.jpg), or train/ and test/ folders of those"
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        for root, dirs, names in os.walk(os.path.join(path, name)):
            dirs[:] = sorted(d for d in dirs if _visible(d))
            for f in sorted(names):
                if _visible(f) and f.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(root, f))
                    labels.append(label)
    if not files:
        raise DataError(
            f"{path}: no {'/'.join(IMAGE_EXTENSIONS)} files in the class folders "
            f"{list(class_names)}"
        )
    return tuple(class_names), files, labels


def _decode(path, max_image_pixels, image_size) -> np.ndarray:
    """One image as uint8 (H, W, 1 or 3), its size checked from the header before the full
    decode."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise _BadImage("PNG header truncated or corrupt")
        width, height = struct.unpack(">II", data[16:24])
    elif data.startswith(b"\xff\xd8"):
        try:
            height, width, _ = tf.image.extract_jpeg_shape(data).numpy()
        except tf.errors.OpError as e:
            raise _BadImage(f"JPEG header truncated or corrupt: {tf_error_text(e)}") from e
    else:
        raise _BadImage(f"not a JPEG or PNG file (starts with {data[:8]!r})")
    if max_image_pixels and int(height) * int(width) > max_image_pixels:
        raise DataError(
            f"{path}: image is {width}x{height} = {int(width) * int(height)} pixels, over "
            f"max_image_pixels={max_image_pixels}; shrink it, remove it, or raise max_image_pixels"
        )
    try:
        image = tf.io.decode_image(data, expand_animations=False).numpy()
    except tf.errors.OpError as e:
        raise _BadImage(f"truncated or corrupt image data: {tf_error_text(e)}") from e
    image = image[..., :1] if image.shape[-1] == 2 else image[..., :3]  # drop alpha
    if image_size is not None:
        image = resize_images(image[None], image_size)[0]
    return image


def load_image_folder(
    path: str,
    *,
    image_size: int | None = None,
    on_corrupt: str = "fail",
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    test_split: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> ImageFolderDataset:
    """Decodes an image folder (either layout in the module docstring) into an ArrayDataset: the
    splits of `list_splits` (the streamed path's too), every file decoded. Grey images become RGB
    where any image is colour.

    test_split: the seeded fraction held out as the test split when there are no train/ and test/
    folders.
    """
    _check_options(on_corrupt, image_size)
    path = os.path.expanduser(path)
    class_names, listed = list_splits(path, test_split=test_split, seed=seed)
    files = [f for split_files, _ in listed.values() for f in split_files]

    def decode(f):
        try:
            return _decode(f, max_image_pixels, image_size)
        except _BadImage as e:
            return e

    # Eager TF ops release the GIL while they run, so threads decode in parallel.
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        decoded = dict(zip(files, pool.map(decode, files)))
    bad = [f"{f}: {r}" for f, r in decoded.items() if isinstance(r, _BadImage)]
    if bad and on_corrupt == "fail":
        raise DataError(
            f"{bad[0]}. Fix or remove it, or pass on_corrupt='skip' (--on_corrupt=skip) to skip "
            f"such files" + (f" ({len(bad)} bad files in all)" if len(bad) > 1 else "")
        )
    if bad:
        logging.warning("Skipped %d corrupt image(s) under %s, e.g. %s", len(bad), path, bad[0])
    kept = {f: image for f, image in decoded.items() if not isinstance(image, _BadImage)}
    sizes = {}
    for f, image in kept.items():
        sizes.setdefault(image.shape[:2], f)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise DataError(
            f"{path}: images have different sizes, e.g. {f1} is {s1[0]}x{s1[1]} and {f2} is "
            f"{s2[0]}x{s2[1]}; pass image_size=N (--image_size=N) to resize all to NxN"
        )
    colour = any(image.shape[-1] == 3 for image in kept.values())
    arrays = {}
    for split, (split_files, labels) in listed.items():
        pairs = [(kept[f], y) for f, y in zip(split_files, labels) if f in kept]
        if not pairs:
            raise DataError(
                f"{path}: all {len(split_files)} {split} images are corrupt, e.g. "
                f"{split_files[0]}: {decoded[split_files[0]]}"
            )
        images = [np.repeat(x, 3, axis=-1) if colour and x.shape[-1] == 1 else x for x, _ in pairs]
        arrays[split] = (np.stack(images), np.asarray([y for _, y in pairs], np.int32))
    x_val, y_val = arrays.get("val", (None, None))
    try:
        return ImageFolderDataset(
            name or os.path.basename(os.path.normpath(path)),
            *arrays["train"],
            *arrays["test"],
            class_names,
            x_val=x_val,
            y_val=y_val,
            skipped=tuple(bad),
        )
    except DataError as e:
        raise DataError(f"{path}: {e}") from e


def list_splits(path: str, *, test_split: float = 0.2, seed: int = 0):
    """(class_names, {'train', 'test'[, 'val']: (files, labels)}): the folder's own splits, or a
    seeded `test_split` fraction of its files held out as 'test'. Both loaders split here."""
    folders = split_folders(path)
    if folders:
        class_names, files, labels = _list_images(folders["train"])
        listed = {"train": (files, labels)}
        for split in ("test", "val"):
            if split in folders:
                listed[split] = tuple(_list_images(folders[split], class_names)[1:])
        return class_names, listed
    if not 0.0 < test_split < 1.0:
        raise ValueError(
            f"`test_split` ({test_split}) must be in (0, 1) for {path}, which has no train/ "
            f"and test/ folders"
        )
    class_names, files, labels = _list_images(path)
    n_test = int(round(len(files) * test_split))
    if not 0 < n_test < len(files):
        raise DataError(
            f"{path}: `test_split` ({test_split}) of {len(files)} images leaves {n_test} "
            f"for testing; both splits need images (add images or change test_split)"
        )
    perm = np.random.default_rng(seed).permutation(len(files))

    def pick(idx):
        return [files[i] for i in idx], [labels[i] for i in idx]

    return class_names, {
        "train": pick(np.sort(perm[n_test:])),
        "test": pick(np.sort(perm[:n_test])),
    }


def _check_options(on_corrupt, image_size):
    if on_corrupt not in ("fail", "skip"):
        raise ValueError(f"`on_corrupt` ({on_corrupt!r}) must be 'fail' or 'skip'")
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise ValueError(f"`image_size` ({image_size}) must be a positive integer")


def split_folders(path: str) -> dict[str, str] | None:
    """{'train', 'test'[, 'val']: folder} when PATH holds train/ and test/ (and validation/), else
    None."""
    folders = {
        split: os.path.join(path, name)
        for split, name in (("train", "train"), ("test", "test"), ("val", "validation"))
    }
    if not (os.path.isdir(folders["train"]) and os.path.isdir(folders["test"])):
        return None
    return {split: folder for split, folder in folders.items() if os.path.isdir(folder)}


class StreamedImages(IndexedSource):
    """An image folder's files as a streamed source: example i is (decoded file i, label i), read
    and decoded in the tf.data map (framework/data/streaming.py) into uint8 images of
    `image_shape`."""

    def __init__(
        self,
        files,
        labels,
        image_shape,
        *,
        on_corrupt: str,
        max_image_pixels: int,
        skipped: streaming.SkippedFiles,
    ):
        self.files, self.labels = tuple(files), np.asarray(labels, np.int32)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_examples = len(self.files)
        self.example_spec = (tf.TensorSpec(self.image_shape, tf.uint8), tf.TensorSpec([], tf.int32))
        self.skips_unreadable = on_corrupt == "skip"
        self.on_corrupt, self.max_image_pixels, self.skipped = on_corrupt, max_image_pixels, skipped
        self.checked = streaming.checks_each_file(
            self.files, on_corrupt, self.image_shape, max_image_pixels
        )
        with tf.device("/cpu:0"):
            self._files, self._labels = tf.constant(self.files), tf.constant(self.labels)

    def load_example(self, index):
        image, readable = streaming.decode_image_file(
            tf.gather(self._files, index),
            self.image_shape,
            on_corrupt=self.on_corrupt,
            max_image_pixels=self.max_image_pixels,
            skipped=self.skipped,
            checked=self.checked,
        )
        return (image, tf.gather(self._labels, index)), readable

    def example_files(self, index: int) -> list[str]:
        return [self.files[index]]

    def subset(self, index) -> "StreamedImages":
        return StreamedImages(
            [self.files[i] for i in index],
            self.labels[index],
            self.image_shape,
            on_corrupt=self.on_corrupt,
            max_image_pixels=self.max_image_pixels,
            skipped=self.skipped,
        )


def find_unreadable(files, max_image_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """ "PATH: unreadable image file: why. ..." for the first of `files` (in order) that does not
     decode, else
    None: each file read, checked and decoded as loading does, in threads, 256 at a time. What a
    streamed pipeline's decode error (TensorFlow's, which names no file) is traced back to; a file
    listed twice is checked once."""

    def why(path):
        try:
            _decode(path, max_image_pixels, None)
        except _BadImage as e:
            return str(e)
        except DataError:
            return f"over max_image_pixels={max_image_pixels} pixels"
        except OSError as e:
            return f"cannot be read ({e.strerror or e})"
        return None

    files = list(dict.fromkeys(files))
    logging.info(
        "data: a file failed to decode while streaming; checking %d files to name it", len(files)
    )
    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), 256):
            chunk = files[start : start + 256]
            for path, reason in zip(chunk, pool.map(why, chunk)):
                if reason:
                    return (
                        f"{path}: {streaming.CORRUPT_MARK}: {reason.rstrip('. ')}. Fix or "
                        "remove it, or pass --on_corrupt=skip to skip such files"
                    )
    return None


_DECODE_ERROR = re.compile(
    r"jpeg::|Invalid PNG data|Input is empty|Unknown image file format|Decode(Jpeg|Png|Image)"
)


def unreadable_file_message(error, sources, first=()) -> str | None:
    """The one line for a streamed pipeline's error: the file it names (the checked path's error),
    or, for a decoder's error (which names none), the first file that does not decode among `first`
    (the files the stream was reading: found in seconds on any folder), then all files of `sources`
    (streamed sources with `files` and `max_image_pixels`). None: not an unreadable file."""
    message = streaming.corrupt_file_message(error)
    if message or not _DECODE_ERROR.search(getattr(error, "message", str(error))):
        return message
    limit = min(
        (getattr(s, "max_image_pixels", MAX_IMAGE_PIXELS) for s in sources),
        default=MAX_IMAGE_PIXELS,
    )
    return find_unreadable(
        [*first, *(f for source in sources for f in getattr(source, "files", ()))], limit
    )


def list_image_folder(
    path: str,
    *,
    image_size: int | None = None,
    on_corrupt: str = "fail",
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    test_split: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> streaming.StreamedSplits:
    """Lists an image folder (either layout in the module docstring) for streaming; decodes only a
    few images, the first of each class, for the image shape: (image_size, image_size) if given,
    else the first image's size (others are resized to it while streaming); RGB if any of those is
    colour. Splits and the test_split draw are those of `load_image_folder` (before any corrupt file
    is skipped)."""
    _check_options(on_corrupt, image_size)
    path = os.path.expanduser(path)
    name = name or os.path.basename(os.path.normpath(path))
    class_names, listed = list_splits(path, test_split=test_split, seed=seed)
    image_shape = _probe_shape(path, listed["train"], image_size, max_image_pixels)
    skipped = streaming.SkippedFiles()
    splits = {
        split: StreamedImages(
            f,
            y,
            image_shape,
            on_corrupt=on_corrupt,
            max_image_pixels=max_image_pixels,
            skipped=skipped,
        )
        for split, (f, y) in listed.items()
    }
    return streaming.StreamedSplits(name, tuple(class_names), image_shape, splits, skipped)


def _probe_shape(path, listed, image_size, max_image_pixels) -> tuple[int, int, int]:
    """The streamed image shape, from the first readable image of each class."""
    files, labels = listed
    firsts = [files[labels.index(label)] for label in sorted(set(labels))]
    images = []
    for f in firsts:
        try:
            images.append(_decode(f, max_image_pixels, None))
        except _BadImage:
            continue
    if not images:
        raise DataError(f"{path}: the first image of every class is unreadable, e.g. {firsts[0]}")
    channels = 3 if any(image.shape[-1] == 3 for image in images) else 1
    height, width = (image_size, image_size) if image_size else images[0].shape[:2]
    return int(height), int(width), channels
