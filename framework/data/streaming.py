"""Streaming from files: decode image files inside tf.data, and the in-memory-or-streaming choice.

`decode_image_file` reads and decodes one JPEG/PNG file in the tf.data graph (no Python, so the map
runs in parallel). Two paths, chosen per source by `checks_each_file`:
    - checked (--on_corrupt=skip, or any listed PNG): before the decode, the first bytes must be a
      JPEG or PNG signature, the last its end marker (a cut file fails here), and the header's size
      at most `max_image_pixels` (a decompression bomb is never decoded); an unreadable file is
      skipped (counted) or fails naming the file;
    - unchecked (--on_corrupt=fail over .jpg/.jpeg files, the common case): read and decode, nothing
      else per file. TensorFlow's JPEG decoder refuses what is cut, garbled or not a JPEG, and any
      image over 2^29 bytes of pixels (Pillow's hard bomb limit, 2 x 89.5M RGB pixels) before
      allocating it; the pipeline then fails with TF's error, which names no file, and
      `image_folder.find_unreadable` names it (the trainers do this, then exit 2 in one line).
      `max_image_pixels` is checked on the decoded size of a file that needs a resize (one of the
      target size is under it). The checks cost a share of the decode's time: what they buy is
      skipping; failing needs none of them. Not caught before the decode: a PNG misnamed .jpg
      (decoded whatever its size, then refused by the pixel limit).
`choose_in_memory` decides where a file dataset lives: in memory when its decoded size is under
IN_MEMORY_LIMIT_BYTES (`--data_in_memory=auto`), or as forced (`yes` / `no`), and logs why in one
line.
"""

import dataclasses
import re
import threading

import numpy as np
import tensorflow as tf
from absl import logging

IN_MEMORY_MODES = ("auto", "yes", "no")
IN_MEMORY_LIMIT_BYTES = (
    2 * 1024**3
)  # decoded uint8 pixels; above this --data_in_memory=auto streams
CORRUPT_MARK = (
    "unreadable image file"  # in the error of --on_corrupt=fail (trainers map it to one line)
)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


@dataclasses.dataclass(frozen=True)
class StreamedSplits:
    """A dataset listed for streaming, not decoded (an image folder, TFRecord shards): `splits`
    {'train', 'test'[, 'val']: a StreamedSource each}; `skipped` counts unreadable image files where
    the source skips them (--on_corrupt=skip), None where it cannot."""

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    splits: dict
    skipped: "SkippedFiles | None" = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def decoded_bytes(self) -> int:
        return sum(s.num_examples for s in self.splits.values()) * int(np.prod(self.image_shape))


def choose_in_memory(mode: str, estimated_bytes: int, what: str) -> bool:
    """True: decode `what` into memory. Logs the choice, the reason and the estimated decoded
    size."""
    if mode not in IN_MEMORY_MODES:
        raise ValueError(f"`data_in_memory` ({mode!r}) must be one of {', '.join(IN_MEMORY_MODES)}")
    size = (
        f"about {estimated_bytes / 1e9:.3g} GB decoded"
        if estimated_bytes >= 1e8
        else f"about {estimated_bytes / 1e6:.3g} MB decoded"
    )
    limit = f"{IN_MEMORY_LIMIT_BYTES / 1e9:.3g} GB"
    if mode == "auto":
        in_memory = estimated_bytes < IN_MEMORY_LIMIT_BYTES
        why = f"--data_in_memory=auto: {size}, {'under' if in_memory else 'over'} the {limit} limit"
    else:
        in_memory = mode == "yes"
        why = f"--data_in_memory={mode}: {size}"
    logging.info(
        "data: %s %s (%s)", "in memory:" if in_memory else "streaming from disk:", what, why
    )
    return in_memory


class SkippedFiles:
    """The distinct files a streamed source skipped, recorded from inside tf.data (thread-safe)."""

    def __init__(self):
        self._paths, self._lock = set(), threading.Lock()

    def add(self, path) -> bool:
        with self._lock:
            path = path.numpy().decode() if hasattr(path, "numpy") else str(path)
            if path not in self._paths:
                logging.warning("skipped unreadable image file %s (--on_corrupt=skip)", path)
            self._paths.add(path)
        return True

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._paths)


def corrupt_file_message(error) -> str | None:
    """The one-line message of an --on_corrupt=fail error raised by decode_image_file, else None."""
    text = getattr(error, "message", str(error))
    match = re.search(r"([^\[\]'\"\n]*: %s: [^\]'\"\n]*)" % re.escape(CORRUPT_MARK), text)
    return match.group(1).strip() if match else None


def _starts_png(data):
    return tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)


def _ends_png(data):
    return tf.equal(
        tf.strings.substr(data, tf.maximum(tf.strings.length(data) - 8, 0), 8), _PNG_END
    )


def _is_whole_png(data):
    """The PNG signature first and its end marker last (a cut file has no end marker)."""
    return _starts_png(data) & _ends_png(data)


def _png_size(data):
    """[height, width] from a PNG's header, [0, 0] when `data` is no whole PNG file (its checks:
    signature, end marker, a header there)."""
    whole = _is_whole_png(data) & (tf.strings.length(data) >= 24)

    def parse():
        wh = tf.reshape(
            tf.cast(tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8), tf.int32), [2, 4]
        )
        return (((wh[:, 0] * 256 + wh[:, 1]) * 256 + wh[:, 2]) * 256 + wh[:, 3])[::-1]

    return tf.cond(whole, parse, lambda: tf.zeros([2], tf.int32))


def checks_each_file(files, on_corrupt: str, image_shape, max_image_pixels: int) -> bool:
    """Whether `decode_image_file` must check each of `files` before decoding it (module docstring):
    to skip unreadable files, when any is a PNG (whose decoder has no size limit of its own), or
    when the target size itself is over `max_image_pixels` (the unchecked path checks only the files
    it resizes)."""
    over = max_image_pixels and image_shape[0] * image_shape[1] > max_image_pixels
    return bool(
        on_corrupt != "fail"
        or over
        or not all(str(f).lower().endswith((".jpg", ".jpeg")) for f in files)
    )


def decode_image_file(
    path,
    image_shape,
    *,
    on_corrupt: str,
    max_image_pixels: int,
    skipped: SkippedFiles | None = None,
    checked: bool = True,
):
    """(uint8 image of `image_shape` (H, W, C), readable) for one file path, in the tf.data graph.

    checked=False (only for JPEG files with on_corrupt='fail'; see `checks_each_file`): read and
    decode, no check first; an unreadable file fails the pipeline with TensorFlow's error (module
    docstring).

    Images of another size are resized to (H, W) (bilinear with antialiasing, rounded, as
    datasets.resize_images); grey becomes RGB when C is 3. An unreadable file: with
    on_corrupt='fail' the pipeline fails with an error naming it; with 'skip' it gives zeros and
    readable=False, and is recorded in `skipped`. `max_image_pixels` 0 sets no limit (and parses no
    header).

    A JPEG of the right size, the common case, runs about 20 small ops and three branches besides
    the decode (a share of the decode's time): the PNG parse and the error message are built
    only in the branches that need them.
    """
    height, width, channels = image_shape
    if not checked:
        if on_corrupt != "fail":
            raise ValueError(
                "decode_image_file(checked=False) fails on an unreadable file: on_corrupt must "
                "be 'fail'"
            )
        return _decode_jpeg_file(path, image_shape, max_image_pixels), tf.constant(True)
    data = tf.io.read_file(path)
    size = tf.strings.length(data)
    starts_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
    jpeg = starts_jpeg & tf.equal(tf.strings.substr(data, tf.maximum(size - 2, 0), 2), b"\xff\xd9")
    if (
        max_image_pixels
    ):  # the header's size (0 for no whole JPEG or PNG), checked before any decode
        hw = tf.cond(jpeg, lambda: tf.image.extract_jpeg_shape(data)[:2], lambda: _png_size(data))
        pixels = tf.cast(hw[0], tf.int64) * tf.cast(hw[1], tf.int64)
        readable = (pixels > 0) & (pixels <= max_image_pixels)
    else:
        readable = jpeg | _is_whole_png(data)

    def decoded():
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image.set_shape([None, None, channels])
        return _fit(image, image_shape, lambda: _resize(image, height, width))

    def unreadable():
        zeros = tf.zeros(image_shape, tf.uint8)
        if on_corrupt == "fail":
            if max_image_pixels:  # a file that starts and ends right had its header's size read
                started = tf.where(
                    ~(jpeg | _ends_png(data)),
                    "truncated (no end marker)",
                    tf.where(
                        pixels > max_image_pixels,
                        f"over max_image_pixels={max_image_pixels} pixels",
                        "corrupt header",
                    ),
                )
            else:  # no limit: a file that starts right is unreadable only when cut
                started = "truncated (no end marker)"
            why = tf.where(~(starts_jpeg | _starts_png(data)), "not a JPEG or PNG file", started)
            message = tf.strings.join(
                [
                    path,
                    f": {CORRUPT_MARK}: ",
                    why,
                    ". Fix or remove it, or pass --on_corrupt=skip to skip such files",
                ]
            )
            with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
                return tf.identity(zeros)
        if skipped is not None:
            with tf.control_dependencies([tf.py_function(skipped.add, [path], tf.bool)]):
                return tf.identity(zeros)
        return zeros

    image = tf.cond(readable, decoded, unreadable)
    return tf.ensure_shape(image, image_shape), readable


def _decode_jpeg_file(path, image_shape, max_image_pixels):
    """decode_image_file's unchecked path: read, decode, and resize a file of another size (its
    decoded size checked against `max_image_pixels` first)."""
    height, width, channels = image_shape
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=channels)

    def resized():
        if not max_image_pixels:
            return _resize(image, height, width)
        pixels = tf.cast(tf.shape(image)[0], tf.int64) * tf.cast(tf.shape(image)[1], tf.int64)
        message = tf.strings.join(
            [
                path,
                f": {CORRUPT_MARK}: over max_image_pixels={max_image_pixels} pixels. "
                "Shrink or remove it, or raise --max_image_pixels",
            ]
        )
        with tf.control_dependencies([tf.debugging.Assert(pixels <= max_image_pixels, [message])]):
            return _resize(image, height, width)

    return tf.ensure_shape(_fit(image, image_shape, resized), image_shape)


def _fit(image, image_shape, resized):
    """`image` as it is when it has `image_shape`'s size, else `resized()` (one branch per file)."""
    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], image_shape[:2]))
    return tf.cond(same, lambda: tf.ensure_shape(image, image_shape), resized)


def _resize(image, height, width):
    image = tf.image.resize(image, (height, width), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
