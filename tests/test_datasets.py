"""Array loaders (both file layouts), the decoded-CIFAR cache, image folders and subsets, on real
data."""

import gzip
import os
import pickle
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from framework.data import datasets
from framework.data.datasets import ArrayDataset, DataError
from framework.data.image_folder import load_image_folder


@pytest.fixture(scope="module")
def jpegs(data_dir):
    """The first real CIFAR-10 JPEG files: 40 train and 20 test, with labels."""
    with np.load(os.path.join(data_dir, "cifar10_jpeg.npz")) as f:
        out = {}
        for split, n in (("train", 40), ("test", 20)):
            blob, off = f[f"{split}_jpeg"], f[f"{split}_offsets"]
            out[split] = (
                [blob[off[i] : off[i + 1]].tobytes() for i in range(n)],
                f[f"y_{split}"][:n],
            )
        out["class_names"] = f["class_names"]
    return out


def _decode(jpeg):
    return tf.io.decode_jpeg(jpeg, channels=3).numpy()


def _write_jpeg_npz(path, jpegs, train=None):
    """A cifar10_jpeg.npz-format file; `train` overrides the list of train JPEG bytes."""
    arrays = {"class_names": jpegs["class_names"]}
    for split in ("train", "test"):
        files, labels = jpegs[split]
        files = train if (split == "train" and train is not None) else files
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(files), np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(f) for f in files]).astype(np.int64)
        arrays[f"y_{split}"] = labels[: len(files)]
    np.savez(path, **arrays)


# --------------------------------------------------------------------------------------------------
# The shared layout and the README's checks.


def test_mnist_matches_the_readme(mnist):
    assert mnist.x_train.shape == (60000, 28, 28, 1) and mnist.x_test.shape == (10000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int32
    np.testing.assert_array_equal(mnist.y_train[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(mnist.y_test[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    counts = np.bincount(
        mnist.x_train.ravel(), minlength=256
    )  # exact statistics without a float copy
    values = np.arange(256) / 255.0
    mean = counts @ values / counts.sum()
    std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
    assert abs(mean - 0.1307) < 5e-5 and abs(std - 0.3081) < 5e-5
    assert mnist.num_classes == 10 and mnist.image_shape == (28, 28, 1) and mnist.x_val is None
    with pytest.raises(
        ValueError, match="read-only"
    ):  # shared by every caller: nobody may change it
        mnist.x_train[0, 0, 0, 0] = 1


def test_cifar10_matches_the_readme(cifar, jpegs, data_dir):
    assert cifar.x_train.shape == (50000, 32, 32, 3) and cifar.x_test.shape == (10000, 32, 32, 3)
    assert cifar.x_train.dtype == np.uint8 and cifar.y_test.dtype == np.int32
    assert cifar.class_names == (
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
    )
    np.testing.assert_array_equal(np.bincount(cifar.y_train), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(cifar.y_test), [1000] * 10)
    np.testing.assert_array_equal(cifar.x_train[:40], [_decode(j) for j in jpegs["train"][0]])
    np.testing.assert_array_equal(cifar.x_test[:20], [_decode(j) for j in jpegs["test"][0]])
    assert datasets.load("cifar10", data_dir) is cifar  # the in-memory cache


def test_default_data_dir(monkeypatch, tmp_path, data_dir):
    assert datasets.default_data_dir() == os.environ["DATA_DIR"]
    monkeypatch.delenv("DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.default_data_dir() == str(tmp_path / ".keras" / "datasets")
    monkeypatch.setenv("DATA_DIR", data_dir)
    assert datasets.load("mnist").x_train.shape == (60000, 28, 28, 1)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TFLOOPS_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert datasets.cache_dir() == str(tmp_path / ".cache" / "tfloops")
    monkeypatch.setenv("XDG_CACHE_HOME", "/x")
    assert datasets.cache_dir() == "/x/tfloops"
    monkeypatch.setenv("TFLOOPS_CACHE_DIR", "/y")
    assert datasets.cache_dir() == "/y"


# --------------------------------------------------------------------------------------------------
# Keras' download layout, built here from real images.


def test_keras_mnist_npz(tmp_path, mnist):
    x, y = mnist.x_train[:100, ..., 0], mnist.y_train[:100].astype(np.uint8)
    np.savez_compressed(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    ds = datasets.load("mnist", str(tmp_path), download=False)
    np.testing.assert_array_equal(ds.x_train[..., 0], x)
    np.testing.assert_array_equal(ds.y_test, y[:30])


def test_keras_fashion_mnist_idx_files(tmp_path, mnist):
    (tmp_path / "fashion-mnist").mkdir()
    x, y = mnist.x_train[:50, ..., 0], mnist.y_train[:50].astype(np.uint8)
    for prefix in ("train", "t10k"):
        with gzip.open(tmp_path / "fashion-mnist" / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, 50, 28, 28) + x.tobytes())
        with gzip.open(tmp_path / "fashion-mnist" / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, 50) + y.tobytes())
    ds = datasets.load("fashion_mnist", str(tmp_path), download=False)
    np.testing.assert_array_equal(ds.x_test[..., 0], x)
    np.testing.assert_array_equal(ds.y_train, y)
    assert ds.class_names[0] == "T-shirt/top" and ds.image_shape == (28, 28, 1)
    # A cut gzip member is reported against its file.
    path = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is truncated or corrupt"):
        datasets.load("fashion_mnist", str(tmp_path), download=False)


def _pickle_batches(folder, names, x, y, label_key, meta_name, meta):
    """Keras' CIFAR files: pickled dicts with bytes keys, data (N, 3072) channels-first uint8."""
    folder.mkdir(parents=True)
    for name, part in zip(names, np.array_split(np.arange(len(x)), len(names))):
        data = x[part].transpose(0, 3, 1, 2).reshape(len(part), 3072)
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"data": data,
                    label_key: [int(v) for v in y[part]],
                    b"filenames": [b"x.png"] * len(part),
                },
                f,
                protocol=4,
            )
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f, protocol=4)


@pytest.mark.parametrize(
    "folder", ["cifar-10-batches-py", "cifar-10-batches-py-target/cifar-10-batches-py"]
)
def test_keras_cifar10_batches(tmp_path, cifar, folder):
    x, y = cifar.x_train[:60], cifar.y_train[:60]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    _pickle_batches(
        tmp_path / folder,
        names,
        x,
        y,
        b"labels",
        "batches.meta",
        {b"label_names": [n.encode() for n in cifar.class_names]},
    )
    ds = datasets.load("cifar10", str(tmp_path), download=False)
    np.testing.assert_array_equal(ds.x_train, x[:50])
    np.testing.assert_array_equal(ds.x_test, x[50:])
    np.testing.assert_array_equal(ds.y_train, y[:50])
    assert ds.class_names == cifar.class_names


def test_keras_cifar100_batches(tmp_path, cifar):
    x, y = cifar.x_train[:30], (cifar.y_train[:30] * 7 + 3) % 100
    names = [f"name{i}" for i in range(100)]
    _pickle_batches(
        tmp_path / "cifar-100-python",
        ["train", "test"],
        x,
        y,
        b"fine_labels",
        "meta",
        {b"fine_label_names": [n.encode() for n in names]},
    )
    ds = datasets.load("cifar100", str(tmp_path), download=False)
    np.testing.assert_array_equal(ds.x_test, x[15:])
    np.testing.assert_array_equal(ds.y_train, y[:15])
    assert ds.class_names == tuple(names)


def test_cifar_pickles_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(
        DataError, match=r"data_batch_1 is truncated or corrupt .*refusing to load `posix.system`"
    ):
        datasets.load("cifar10", str(tmp_path), download=False)
    assert not marker.exists()


def test_cifar_pickles_read_only_from_a_named_folder(tmp_path, monkeypatch, cifar):
    monkeypatch.delenv("DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    keras_dir = tmp_path / ".keras" / "datasets"
    _pickle_batches(
        keras_dir / "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
        cifar.x_train[:12],
        cifar.y_train[:12],
        b"labels",
        "batches.meta",
        {},
    )
    with pytest.raises(DataError, match="read only from a folder you name"):
        datasets.load("cifar10", download=False)
    assert len(datasets.load("cifar10", str(keras_dir), download=False).x_test) == 2


# --------------------------------------------------------------------------------------------------
# Missing and broken files.


def test_missing_dataset_names_every_place_and_the_flag(tmp_path):
    with pytest.raises(DataError) as e:
        datasets.load("cifar100", str(tmp_path), download=False)
    message = str(e.value)
    for place in (
        tmp_path / "cifar100_jpeg.npz",
        tmp_path / "cifar-100-python",
        tmp_path / "cifar-100-python-target" / "cifar-100-python",
    ):
        assert str(place) in message
    assert "cifar100 not found" in message and "--data_dir=DIR" in message and "DATA_DIR" in message
    assert "download: not tried (download=False)" in message and "\n" not in message  # one line


def test_download_failure_is_reported(tmp_path, monkeypatch):
    def offline(**kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(
        DataError, match=r"(?s)mnist.npz: not found.*download: failed \(OSError: URL fetch"
    ):
        datasets.load("mnist", str(tmp_path))


def test_download_is_converted(tmp_path, monkeypatch, cifar):
    def fake(**kwargs):  # keras' shapes: labels (N, 1) uint8
        return (cifar.x_train[:8], cifar.y_train[:8, None].astype(np.uint8)), (
            cifar.x_test[:4],
            cifar.y_test[:4, None].astype(np.uint8),
        )

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake)
    ds = datasets.load("cifar10", str(tmp_path))
    assert (
        ds.y_train.shape == (8,)
        and ds.y_train.dtype == np.int32
        and ds.class_names == cifar.class_names
    )
    np.testing.assert_array_equal(ds.x_test, cifar.x_test[:4])


def test_truncated_npz(tmp_path, data_dir):
    data = open(os.path.join(data_dir, "mnist.npz"), "rb").read()
    (tmp_path / "mnist.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=f"{tmp_path / 'mnist.npz'} is truncated or corrupt.*Delete it"
    ):
        datasets.load("mnist", str(tmp_path), download=False)


def test_wrong_npz_contents(tmp_path):
    x = np.zeros((4, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.arange(4))
    with pytest.raises(DataError, match=r"missing key\(s\) \['x_test', 'y_test'\]"):
        datasets.load("mnist", str(tmp_path), download=False)
    y = np.zeros(4, np.uint8)
    for arrays, message in [
        (
            dict(x_train=x, y_train=np.array([0, 1, 2, 10]), x_test=x, y_test=y),
            r"mnist.npz: mnist: y_train holds labels in \[0, 10\] but there are 10 classes",
        ),
        (
            dict(x_train=x, y_train=y, x_test=x, y_test=np.zeros(4)),
            r"y_test must be integer labels \(N,\), got float64",
        ),
        (dict(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0]), "mnist: the test split is empty"),
        (
            dict(x_train=x, y_train=y, x_test=x, y_test=y[:3]),
            "x_test has 4 images but y_test has 3 labels",
        ),
    ]:
        np.savez(tmp_path / "mnist.npz", **arrays)
        with pytest.raises(DataError, match=message):
            datasets.load("mnist", str(tmp_path), download=False)


# --------------------------------------------------------------------------------------------------
# JPEG datasets: decode, memory and disk caches.


def test_jpeg_cache(tmp_path, monkeypatch, jpegs):
    monkeypatch.setenv("TFLOOPS_CACHE_DIR", str(tmp_path / "cache"))
    _write_jpeg_npz(tmp_path / "cifar10_jpeg.npz", jpegs)
    first = datasets.load("cifar10", str(tmp_path), download=False)
    np.testing.assert_array_equal(first.x_train, [_decode(j) for j in jpegs["train"][0]])
    np.testing.assert_array_equal(first.y_test, jpegs["test"][1])
    (cached,) = os.listdir(tmp_path / "cache")  # one file, no temp file left behind
    assert cached.startswith("cifar10_jpeg-") and cached.endswith(".npz")

    # A new process (empty memory cache) reads the disk cache without decoding.
    datasets.clear_memory_cache()
    decode = datasets._decode_jpegs
    monkeypatch.setattr(
        datasets, "_decode_jpegs", lambda *a: pytest.fail("decoded despite the cache")
    )
    second = datasets.load("cifar10", str(tmp_path), download=False)
    assert second is not first
    np.testing.assert_array_equal(second.x_train, first.x_train)
    assert second.class_names == first.class_names

    # A cut cache file is ignored: decode again and rewrite it.
    cache_file = tmp_path / "cache" / cached
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    datasets.clear_memory_cache()
    monkeypatch.setattr(datasets, "_decode_jpegs", decode)
    third = datasets.load("cifar10", str(tmp_path), download=False)
    np.testing.assert_array_equal(third.x_test, first.x_test)
    assert cache_file.stat().st_size > 100_000


def test_jpeg_mixed_sizes_and_corrupt_images(tmp_path, monkeypatch, jpegs):
    monkeypatch.setenv("TFLOOPS_CACHE_DIR", str(tmp_path / "cache"))
    train = list(jpegs["train"][0])
    train[7] = tf.io.encode_jpeg(np.zeros((16, 16, 3), np.uint8)).numpy()
    _write_jpeg_npz(tmp_path / "cifar10_jpeg.npz", jpegs, train=train)
    with pytest.raises(DataError, match="cifar10_jpeg.npz: the train images have mixed sizes"):
        datasets.load("cifar10", str(tmp_path), download=False)
    train[7] = train[7][: len(train[7]) // 2]
    _write_jpeg_npz(tmp_path / "cifar10_jpeg.npz", jpegs, train=train)
    with pytest.raises(DataError, match="cifar10_jpeg.npz is truncated or corrupt"):
        datasets.load("cifar10", str(tmp_path), download=False)


# --------------------------------------------------------------------------------------------------
# Image folders.


def _image_folder(root, jpegs, per_class=4, classes=("cat", "airplane", "dog")):
    """root/<class>/<i>.jpg from real CIFAR JPEG files; returns {path: decoded image}."""
    files = iter(jpegs["train"][0])
    expected = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            jpeg = next(files)
            (root / name / f"{i}.jpg").write_bytes(jpeg)
            expected[str(root / name / f"{i}.jpg")] = _decode(jpeg)
    return expected


def test_image_folder(tmp_path, jpegs):
    expected = _image_folder(tmp_path / "pets", jpegs)
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("ignored")
    ds = load_image_folder(str(tmp_path / "pets"), test_split=0.25)
    assert ds.name == "pets" and ds.class_names == ("airplane", "cat", "dog")  # sorted folder names
    assert (
        ds.x_train.shape == (9, 32, 32, 3)
        and ds.x_test.shape == (3, 32, 32, 3)
        and ds.num_skipped == 0
    )
    # Every image comes back exactly, with its folder's label.
    by_bytes = {
        v.tobytes(): ds.class_names.index(os.path.basename(os.path.dirname(k)))
        for k, v in expected.items()
    }
    for x, y in zip(
        np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])
    ):
        assert by_bytes.pop(x.tobytes()) == y
    assert not by_bytes


def test_image_folder_train_test_layout(tmp_path, jpegs):
    _image_folder(tmp_path / "d" / "train", jpegs, per_class=3)
    _image_folder(tmp_path / "d" / "test", jpegs, per_class=1, classes=("airplane", "cat"))
    ds = load_image_folder(str(tmp_path / "d"))
    assert (
        len(ds.y_train) == 9
        and len(ds.y_test) == 2
        and ds.class_names == ("airplane", "cat", "dog")
    )
    np.testing.assert_array_equal(ds.y_test, [0, 1])


def test_image_folder_corrupt_image(tmp_path, jpegs):
    _image_folder(tmp_path / "d", jpegs)
    bad = tmp_path / "d" / "dog" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:300])  # the header is cut
    cut = tmp_path / "d" / "dog" / "2.jpg"
    cut.write_bytes(cut.read_bytes()[:-200])  # the header is whole, the pixels are cut
    (tmp_path / "d" / "cat" / "9.png").write_bytes(b"not an image at all")
    with pytest.raises(
        DataError,
        match=f"{tmp_path / 'd' / 'cat' / '9.png'}: not a JPEG or PNG.*--on_corrupt=skip"
        r".*\(3 bad files in all\)",
    ):
        load_image_folder(str(tmp_path / "d"))
    ds = load_image_folder(str(tmp_path / "d"), on_corrupt="skip")
    assert ds.num_skipped == 3 and len(ds.y_train) + len(ds.y_test) == 12 + 1 - 3
    for path in bad, cut:
        assert any(s.startswith(f"{path}: ") and "truncated or corrupt" in s for s in ds.skipped)


def test_image_folder_mixed_sizes(tmp_path, jpegs, mnist):
    _image_folder(tmp_path / "d", jpegs)
    grey = tmp_path / "d" / "cat" / "grey.png"
    grey.write_bytes(tf.io.encode_png(mnist.x_train[0]).numpy())
    with pytest.raises(DataError, match=rf"{grey} is 28x28.*image_size=N \(--image_size=N\)"):
        load_image_folder(str(tmp_path / "d"))
    ds = load_image_folder(str(tmp_path / "d"), image_size=16)
    assert ds.image_shape == (16, 16, 3)  # the grey PNG became RGB


def test_image_folder_huge_images(tmp_path, jpegs):
    _image_folder(tmp_path / "d", jpegs)
    with pytest.raises(DataError, match="is 32x32 = 1024 pixels, over max_image_pixels=1000"):
        load_image_folder(str(tmp_path / "d"), max_image_pixels=1000)
    # A PNG whose header claims 100000 x 100000 is refused before any decoding.
    header = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    )
    (tmp_path / "d" / "dog" / "bomb.png").write_bytes(header + b"\0" * 100)
    with pytest.raises(
        DataError, match="bomb.png: image is 100000x100000 = 10000000000 pixels, over max_image"
    ):
        load_image_folder(str(tmp_path / "d"), on_corrupt="skip")


def test_image_folder_missing(tmp_path):
    with pytest.raises(DataError, match=r"nope: image folder not found; pass --data_dir=PATH"):
        load_image_folder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(str(tmp_path / "empty"))


# --------------------------------------------------------------------------------------------------
# Subsets.


def _numbered(n_train=200, n_test=50, classes=5):
    """Images that carry their own index, so subsets can be traced back."""
    x = np.zeros((n_train, 4, 4, 1), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = np.arange(n_train) % 256, np.arange(n_train) // 256
    return ArrayDataset(
        "numbered",
        x,
        np.arange(n_train) % classes,
        x[:n_test],
        np.arange(n_test) % classes,
        tuple(f"c{i}" for i in range(classes)),
    )


def _index(x):
    return x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 1, 0].astype(int)


def test_classes_reindexed_in_the_given_order(mnist):
    ds = datasets.make_subsets(mnist, classes=[3, 1])
    assert ds.class_names == ("3", "1") and ds.num_classes == 2
    assert len(ds.y_train) == np.sum((mnist.y_train == 3) | (mnist.y_train == 1))
    np.testing.assert_array_equal(ds.x_train[ds.y_train == 0], mnist.x_train[mnist.y_train == 3])
    np.testing.assert_array_equal(ds.x_test[ds.y_test == 1], mnist.x_test[mnist.y_test == 1])


def test_train_examples_is_seeded():
    ds = _numbered()
    a = _index(datasets.make_subsets(ds, train_examples=50, seed=1).x_train)
    np.testing.assert_array_equal(
        a, _index(datasets.make_subsets(ds, train_examples=50, seed=1).x_train)
    )
    assert len(set(a)) == 50 and not np.array_equal(
        a, _index(datasets.make_subsets(ds, train_examples=50).x_train)
    )
    assert set(a) <= set(
        _index(datasets.make_subsets(ds, train_examples=120, seed=1).x_train)
    )  # nested
    with pytest.raises(DataError, match=r"`train_examples` \(201\) is more than the 200"):
        datasets.make_subsets(ds, train_examples=201)


def test_test_examples_is_the_same_subset_for_every_seed():
    ds = _numbered()
    a = datasets.make_subsets(ds, test_examples=20, seed=1)
    b = datasets.make_subsets(ds, test_examples=20, seed=7)
    np.testing.assert_array_equal(a.x_test, b.x_test)  # scored on the same images whatever the seed
    index = _index(a.x_test)
    assert len(set(index)) == 20 and index.max() >= 20  # a random subset, not the first 20
    np.testing.assert_array_equal(a.y_test, index % 5)  # labels travel with their images
    assert set(index) <= set(_index(datasets.make_subsets(ds, test_examples=30).x_test))  # nested
    assert len(a.x_train) == 200  # the training split is untouched
    with pytest.raises(
        DataError, match=r"`test_examples` \(51\) is more than the 50 test examples"
    ):
        datasets.make_subsets(ds, test_examples=51)


def test_validation_split_sizes_and_disjointness():
    ds = _numbered()
    sub = datasets.make_subsets(ds, train_examples=100, validation_split=0.2, seed=3)
    assert len(sub.x_train) == 80 and len(sub.x_val) == 20 and sub.y_val.dtype == np.int32
    train, val = set(_index(sub.x_train)), set(_index(sub.x_val))
    assert not train & val
    assert train | val == set(_index(datasets.make_subsets(ds, train_examples=100, seed=3).x_train))
    np.testing.assert_array_equal(
        sub.y_val, _index(sub.x_val) % 5
    )  # labels travel with their images
    assert sub.x_test is ds.x_test  # the test split is untouched
    again = datasets.make_subsets(ds, train_examples=100, validation_split=0.2, seed=3)
    np.testing.assert_array_equal(again.x_val, sub.x_val)


def test_image_size(mnist):
    small = datasets.make_subsets(mnist, train_examples=500, image_size=6)
    assert small.x_train.shape == (500, 6, 6, 1) and small.x_test.shape == (10000, 6, 6, 1)
    assert small.x_train.dtype == np.uint8
    # Antialiased downscaling averages: the mean brightness survives (nearest-neighbour would not).
    assert abs(small.x_test.mean() - mnist.x_test.mean()) < 1.0
    assert small.x_test.max() < 255


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(classes=[]), r"`classes` \(\[\]\) must be a non-empty list"),
        (dict(classes=[1, 1]), r"`classes` \(\[1, 1\]\) lists a class twice"),
        (dict(classes=[0, 5]), r"numbered: `classes` \(\[0, 5\]\) has \[5\], outside \[0, 4\]"),
        (dict(train_examples=0), r"`train_examples` \(0\) must be a positive integer"),
        (dict(train_examples=True), r"`train_examples` \(True\) must be a positive integer"),
        (dict(test_examples=-3), r"`test_examples` \(-3\) must be a positive integer"),
        (dict(image_size=0), r"`image_size` \(0\) must be a positive integer"),
        (dict(validation_split=1.0), r"`validation_split` \(1.0\) must be a fraction in \[0, 1\)"),
        (dict(validation_split=0.001), r"leaves 0 for validation"),
    ],
)
def test_subset_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.make_subsets(_numbered(), **kwargs)


def test_array_dataset_is_checked():
    x, y = np.zeros((3, 2, 2, 1), np.uint8), np.zeros(3, np.int64)
    assert ArrayDataset("d", x, y, x, y, ("a",)).y_train.dtype == np.int32
    with pytest.raises(
        DataError, match=r"d: x_train must be a uint8 array \(N, H, W, C\), got float32"
    ):
        ArrayDataset("d", x.astype(np.float32), y, x, y, ("a",))
    with pytest.raises(DataError, match="x_test has 3 images but y_test has 2 labels"):
        ArrayDataset("d", x, y, x, y[:2], ("a",))
    with pytest.raises(DataError, match="x_test images are"):
        ArrayDataset("d", x, y, np.zeros((3, 3, 3, 1), np.uint8), y, ("a",))
