"""Named datasets: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 as uint8 arrays (arrays.py: the
ArrayDataset they come in, and the subsets users make).

`load(name)` looks, in this order:
  1. in `data_dir` (the argument, else $DATA_DIR, else ~/.keras/datasets) for
     - the shared layout (../shared/datasets): `mnist.npz` or `fashion_mnist.npz` (the keys of
       keras' mnist.npz), `cifar10_jpeg.npz` or `cifar100_jpeg.npz` (JPEG bytes + offsets +
       class_names), or
     - keras' download layout: `mnist.npz`, `fashion-mnist/*-ubyte.gz`, `cifar-10-batches-py/` and
       `cifar-100-python/` (also inside the `*-target/` folders keras 3 extracts to);
  2. `keras.datasets.<name>.load_data()` when `download=True` (it reuses its files in
     ~/.keras/datasets).
Nothing found gives a `DataError` listing every place looked at and the flag to pass.

JPEG datasets are decoded once, in parallel, then cached in memory (per process) and on disk as an
uncompressed .npz under `cache_dir()`, so later processes skip the decode.
Returned arrays are read-only: they are shared by every caller in the process.
"""

import gzip
import hashlib
import os
import pickle
import struct
import zipfile
import zlib
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from framework.data.arrays import (  # noqa: F401  re-exported: most callers import them from here
    ArrayDataset,
    DataError,
    make_subsets,
    read_cached,
    resize_images,
    tf_error_text,
    write_cached,
)

DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100")

CLASS_NAMES = {
    "mnist": tuple("0123456789"),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    "cifar100": tuple(
        """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
        bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock
        cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish
        forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
        lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange
        orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
        possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
        snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
        television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
        woman worm""".split()
    ),
}

_FIX = "pass --data_dir=DIR (or set DATA_DIR=DIR)"
_CACHE_VERSION = 1  # bump when decoding changes, so stale disk caches are ignored


# --------------------------------------------------------------------------------------------------
# Where data lives.


def default_data_dir() -> str:
    """$DATA_DIR, else ~/.keras/datasets (where keras.datasets keeps its downloads)."""
    return os.environ.get("DATA_DIR") or os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def cache_dir() -> str:
    """Where decoded datasets are cached: $TFLOOPS_CACHE_DIR, else $XDG_CACHE_HOME/tfloops, else
    ~/.cache/tfloops."""
    if os.environ.get("TFLOOPS_CACHE_DIR"):
        return os.environ["TFLOOPS_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfloops")


_MEMORY_CACHE: dict[tuple, ArrayDataset] = {}


def clear_memory_cache() -> None:
    """Forget the datasets loaded in this process (the disk cache stays)."""
    _MEMORY_CACHE.clear()


def _stat_key(paths: Sequence[str]) -> tuple:
    """Identifies file contents cheaply: path, mtime and size of each file."""
    key = []
    for p in paths:
        st = os.stat(p)
        key.append((os.path.realpath(p), st.st_mtime_ns, st.st_size))
    return tuple(key)


# --------------------------------------------------------------------------------------------------
# Loading.


def load(name: str, data_dir: str | None = None, *, download: bool = True) -> ArrayDataset:
    """Loads one of `DATASETS` as uint8 arrays; see the module docstring for where it looks."""
    if name not in DATASETS:
        raise ValueError(f"`name` ({name!r}) must be one of {DATASETS}")
    # Pickled CIFAR batches are read only from a folder the user named (argument or $DATA_DIR); in
    # keras' default folder they are left to keras.datasets (step 2), which reads them itself.
    explicit = data_dir is not None or bool(os.environ.get("DATA_DIR"))
    data_dir = os.path.expanduser(data_dir) if data_dir is not None else default_data_dir()
    looked = []
    for place, files, reader in _candidates(name, data_dir):
        if not all(os.path.isfile(f) for f in files):
            looked.append(f"{place}: not found")
            continue
        if reader is _read_cifar_pickles and not explicit:
            looked.append(
                f"{place}: found, but pickled batches are read only from a folder you name "
                f"(--data_dir={data_dir})"
            )
            continue
        key = (name, _stat_key(files))
        if key not in _MEMORY_CACHE:
            _MEMORY_CACHE[key] = _read_only(reader(name, files))
        logging.info("Loaded %s from %s", name, place)
        return _MEMORY_CACHE[key]
    if not download:
        looked.append(f"keras.datasets.{name} download: not tried (download=False)")
    else:
        try:
            return _read_only(_download(name))
        except Exception as e:  # noqa: BLE001 -- any failure of the download is reported with the rest
            looked.append(f"keras.datasets.{name} download: failed ({type(e).__name__}: {e})")
    raise DataError(
        f"{name} not found (looked at: " + "; ".join(looked) + f"). Fix: {_FIX} to a folder "
        f"holding one of these files, or allow the keras.datasets download (needs the internet)"
    )


def _candidates(name, data_dir) -> list[tuple[str, list[str], Callable]]:
    """(description, files it needs, reader) for each layout `name` may be stored in, in lookup
    order."""
    j = lambda *parts: os.path.join(data_dir, *parts)  # noqa: E731
    if name == "mnist":
        return [(j("mnist.npz"), [j("mnist.npz")], _read_mnist_npz)]
    if name == "fashion_mnist":
        gz = [
            j("fashion-mnist", f)
            for f in (
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            )
        ]
        return [
            (j("fashion_mnist.npz"), [j("fashion_mnist.npz")], _read_mnist_npz),
            (j("fashion-mnist", "*-ubyte.gz") + " (keras layout)", gz, _read_idx_gz),
        ]
    folder, batches = {
        "cifar10": (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
        ),
        "cifar100": ("cifar-100-python", ["train", "test"]),
    }[name]
    out = [(j(f"{name}_jpeg.npz"), [j(f"{name}_jpeg.npz")], _read_jpeg_npz)]
    for d in (
        j(folder),
        j(f"{folder}-target", folder),
        data_dir,
    ):  # keras 2, keras 3, the folder itself
        out.append(
            (
                os.path.join(d, "{" + ",".join(batches) + "}") + " (keras layout)",
                [os.path.join(d, b) for b in batches],
                _read_cifar_pickles,
            )
        )
    return out


def _read_only(ds: ArrayDataset) -> ArrayDataset:
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.x_val, ds.y_val):
        if a is not None:
            a.setflags(write=False)
    return ds


def _corrupt(path, err) -> DataError:
    return DataError(
        f"{path} is truncated or corrupt ({type(err).__name__}: {err}). Delete it and download "
        f"it again, or {_FIX} to a folder with a good copy."
    )


def _make(name, path, x_train, y_train, x_test, y_test, class_names) -> ArrayDataset:
    """Builds the dataset; a problem with the contents is reported against the file it came from."""
    x_train, x_test = (x[..., None] if x.ndim == 3 else x for x in (x_train, x_test))  # MNIST: C=1
    for split, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype != np.uint8:
            raise DataError(f"{path}: {split} is {x.dtype}, expected uint8 pixels (wrong file?)")
    try:
        return ArrayDataset(
            name,
            np.ascontiguousarray(x_train),
            np.asarray(y_train),
            np.ascontiguousarray(x_test),
            np.asarray(y_test),
            tuple(class_names),
        )  # it checks the labels, then makes them int32
    except DataError as e:
        raise DataError(f"{path}: {e}") from e


def _read_npz(path, keys) -> dict[str, np.ndarray]:
    """Reads `keys` from an .npz without unpickling anything; truncation or corruption ->
    DataError."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(
                f"{path}: expected an .npz archive, found a single .npy array; replace it, or "
                f"{_FIX} to a folder with the right file."
            )
        with f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {missing} (it has {sorted(f.files)}); it is not the "
                    f"file expected here. Replace it, or {_FIX} to a folder with the right file."
                )
            return {k: f[k] for k in keys}
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error) as e:
        raise _corrupt(path, e) from e


def _read_mnist_npz(name, files) -> ArrayDataset:
    a = _read_npz(files[0], ("x_train", "y_train", "x_test", "y_test"))
    return _make(
        name, files[0], a["x_train"], a["y_train"], a["x_test"], a["y_test"], CLASS_NAMES[name]
    )


def _read_idx_gz(name, files) -> ArrayDataset:
    """Fashion-MNIST as keras downloads it: gzipped IDX files (magic, sizes, then raw bytes)."""

    def read(path, images):
        try:
            with gzip.open(path, "rb") as f:
                data = f.read()
            header = 16 if images else 8
            magic, n, *hw = struct.unpack(">" + "I" * (header // 4), data[:header])
            if magic != (2051 if images else 2049) or len(data) != header + n * int(
                np.prod(hw, dtype=int)
            ):
                raise ValueError(
                    f"bad IDX header or size (magic {magic}, {n} items, {len(data)} bytes)"
                )
        except (OSError, EOFError, zlib.error, struct.error, ValueError) as e:
            raise _corrupt(path, e) from e
        return np.frombuffer(data, np.uint8, offset=header).reshape([n] + hw)

    x_train, y_train, x_test, y_test = (read(p, i % 2 == 0) for i, p in enumerate(files))
    return _make(
        name, os.path.dirname(files[0]), x_train, y_train, x_test, y_test, CLASS_NAMES[name]
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles: this unpickler refuses every global except those that
    rebuild numpy arrays (the same rule keras.datasets applies), so a tampered file cannot run
    code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load `{module}.{name}` (only numpy arrays are allowed)"
        )


def _read_cifar_pickles(name, files) -> ArrayDataset:
    """CIFAR as keras downloads it: pickled dicts {data: (N, 3072) uint8 channels-first, labels:
    [...]}."""
    label_key = "labels" if name == "cifar10" else "fine_labels"
    xs, ys = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
            d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(d[label_key])
        except (
            pickle.UnpicklingError,
            EOFError,
            OSError,
            KeyError,
            ValueError,
            AttributeError,
            TypeError,
        ) as e:
            raise _corrupt(path, e) from e
        xs.append(x)
        ys.append(y)
    class_names = CLASS_NAMES[name]
    meta = os.path.join(os.path.dirname(files[0]), "batches.meta" if name == "cifar10" else "meta")
    if os.path.isfile(meta):  # keep the names that came with the data, when they are readable
        try:
            with open(meta, "rb") as f:
                m = _NumpyOnlyUnpickler(f, encoding="bytes").load()
            m = {k.decode() if isinstance(k, bytes) else k: v for k, v in m.items()}
            names = m["label_names" if name == "cifar10" else "fine_label_names"]
            class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
        except Exception as e:  # noqa: BLE001 -- the built-in names are as good
            logging.warning("Ignoring unreadable %s (%s); using the standard class names", meta, e)
    return _make(
        name,
        os.path.dirname(files[0]),
        np.concatenate(xs[:-1]),
        np.concatenate(ys[:-1]),
        xs[-1],
        ys[-1],
        class_names,
    )


def _download(name) -> ArrayDataset:
    """keras.datasets, which downloads to (and then reuses) ~/.keras/datasets."""
    module = getattr(keras.datasets, name)
    kwargs = {"label_mode": "fine"} if name == "cifar100" else {}
    (x_train, y_train), (x_test, y_test) = module.load_data(**kwargs)
    if (
        x_train.ndim == 4 and x_train.shape[1] == 3 and x_train.shape[-1] != 3
    ):  # channels_first config
        x_train, x_test = x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
    return _make(
        name,
        f"keras.datasets.{name}",
        x_train,
        np.ravel(y_train),
        x_test,
        np.ravel(y_test),
        CLASS_NAMES[name],
    )


# --------------------------------------------------------------------------------------------------
# JPEG datasets (the shared cifar10_jpeg.npz): decode once, cache in memory and on disk.


def _read_jpeg_npz(name, files) -> ArrayDataset:
    path = files[0]
    source = repr((_CACHE_VERSION, _stat_key(files)))
    cached_path = os.path.join(
        cache_dir(), f"{name}_jpeg-{hashlib.sha1(source.encode()).hexdigest()[:16]}.npz"
    )
    ds = read_cached(name, cached_path, source)
    if ds is not None:
        return ds
    a = _read_npz(
        path,
        (
            "train_jpeg",
            "train_offsets",
            "y_train",
            "test_jpeg",
            "test_offsets",
            "y_test",
            "class_names",
        ),
    )
    x_train = _decode_jpegs(path, "train", a["train_jpeg"], a["train_offsets"])
    x_test = _decode_jpegs(path, "test", a["test_jpeg"], a["test_offsets"])
    ds = _make(
        name, path, x_train, a["y_train"], x_test, a["y_test"], [str(c) for c in a["class_names"]]
    )
    write_cached(ds, cached_path, source)
    return ds


def _decode_jpegs(path, split, blob, offsets) -> np.ndarray:
    """Decodes image i = blob[offsets[i]:offsets[i+1]] for all i, in parallel batches, into (N, H,
    W, C)."""
    offsets = np.asarray(offsets)
    if (
        blob.dtype != np.uint8
        or blob.ndim != 1
        or offsets.ndim != 1
        or len(offsets) < 1
        or offsets[0] != 0
        or offsets[-1] != len(blob)
        or np.any(np.diff(offsets) <= 0)
    ):
        raise _corrupt(path, ValueError(f"{split}_offsets do not cut {split}_jpeg into images"))
    if len(offsets) == 1:
        raise DataError(f"{path}: the {split} split is empty")
    raw = blob.tobytes()
    images = [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    try:
        shape = tuple(tf.io.decode_jpeg(images[0]).shape)  # every image must match the first
    except tf.errors.OpError as e:
        raise _corrupt(
            path, ValueError(f"{split} image 0 does not decode: {tf_error_text(e)}")
        ) from e

    def decode_batch(batch):
        return tf.map_fn(
            lambda s: tf.ensure_shape(tf.io.decode_jpeg(s, channels=shape[-1]), shape),
            batch,
            fn_output_signature=tf.TensorSpec(shape, tf.uint8),
        )

    out = np.empty((len(images),) + shape, np.uint8)
    batches = (
        tf.data.Dataset.from_tensor_slices(images)
        .batch(1000)
        .map(decode_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    start = 0
    try:
        for batch in batches.as_numpy_iterator():
            out[start : start + len(batch)] = batch
            start += len(batch)
    except tf.errors.OpError as e:
        if "compatible with expected shape" in e.message:
            raise DataError(
                f"{path}: the {split} images have mixed sizes (the first is {shape}): "
                f"{tf_error_text(e)}; every image must have one size"
            ) from e
        raise _corrupt(
            path, ValueError(f"a {split} image does not decode: {tf_error_text(e)}")
        ) from e
    return out
