"""Tests for trainers.triplet_loss and trainers.fec_data."""

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainers import fec_data, triplet_loss

ONES, ZEROS = np.ones((1, 16), np.float32), np.zeros((1, 16), np.float32)


def _numpy_loss(e1, e2, e3, delta):
    """Reference: one triplet at a time."""
    losses = []
    for a, b, c in zip(e1, e2, e3):
        d12, d13, d23 = np.sum((a - b) ** 2), np.sum((a - c) ** 2), np.sum((b - c) ** 2)
        losses.append(max(0.0, d12 - d13 + delta) + max(0.0, d12 - d23 + delta))
    return np.array(losses)


def _embeddings(batch=32, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, dim)).astype(np.float32) for _ in range(3)]


def test_known_values():
    # e1 = near1 = ones, e2 = near2 = zeros, e3 = far = ones: (16 - 0 + .5) + (16 - 16 + .5) = 17.
    loss = triplet_loss.triplet_loss_per_example(ONES, ZEROS, ONES, delta=0.5)
    np.testing.assert_allclose(loss.numpy(), [17.0])
    loss = triplet_loss.triplet_loss_per_example(ZEROS, ZEROS, ONES, delta=0.5)
    np.testing.assert_allclose(loss.numpy(), [0.0])
    both = triplet_loss.weighted_triplet_loss(
        np.concatenate([ONES, ZEROS]),
        np.concatenate([ZEROS, ZEROS]),
        np.concatenate([ONES, ONES]),
        votes=[1.0, 1.0],
        delta=0.5,
    )
    np.testing.assert_allclose(both.numpy(), 8.5)


# 1-D embeddings f0 = 0, f1 = 1, f2 = 3: d01 = 1, d02 = 9, d12 = 4; margin 0.5. By hand, the loss of
# each ordering (face k the odd one, the other two the similar pair):
#   L0 = [4 - 1 + .5]+ + [4 - 9 + .5]+ = 3.5,  L1 = [9 - 1 + .5]+ + [9 - 4 + .5]+ = 14,  L2 = 0 + 0
#   = 0.
LINE = [np.float32([[0.0]] * 3), np.float32([[1.0]] * 3), np.float32([[3.0]] * 3)]
SHARES = np.float32([[0.2, 0.1, 0.7], [0.6, 0.3, 0.1], [0.5, 0.5, 0.0]])


def test_ordering_losses_and_the_two_triplet_losses_known_values():
    np.testing.assert_allclose(triplet_loss.ordering_losses(*LINE, 0.5), [[3.5, 14.0, 0.0]] * 3)
    # vote_weighted: .2*3.5 + .1*14 + .7*0 = 2.1;  .6*3.5 + .3*14 + .1*0 = 6.3;  .5*3.5 + .5*14 =
    # 8.75.
    np.testing.assert_allclose(
        triplet_loss.shares_loss_per_example(*LINE, SHARES, 0.5), [2.1, 6.3, 8.75], rtol=1e-6
    )
    # top_vote: .7*L2 = 0;  .6*L0 = 2.1;  a tie takes the first top: .5*L0 = 1.75.
    np.testing.assert_allclose(
        triplet_loss.shares_loss_per_example(*LINE, SHARES, 0.5, loss="top_vote"),
        [0.0, 2.1, 1.75],
        rtol=1e-6,
    )
    # One-hot shares (class triplets): both losses are the old top-ordering loss.
    e1, e2, e3 = _embeddings(batch=8)
    one_hot = np.tile(np.float32([0, 0, 1]), (8, 1))
    for loss in triplet_loss.LOSSES:
        np.testing.assert_allclose(
            triplet_loss.shares_loss_per_example(e1, e2, e3, one_hot, 2.0, loss=loss),
            _numpy_loss(e1, e2, e3, 2.0),
            rtol=1e-5,
        )
    compiled = tf.function(triplet_loss.shares_loss_per_example, jit_compile=True)
    np.testing.assert_allclose(compiled(*LINE, SHARES, 0.5), [2.1, 6.3, 8.75], rtol=1e-6)


def test_triplet_accuracy_skips_a_batch_with_no_majority_triplet():
    from trainers.triplet_train import TripletTask

    correct, counted = triplet_loss.odd_one_hits(*LINE, SHARES)
    # The embedding's odd one is f2 (pair f0, f1 closest): right for row 0, wrong for row 1; row 2
    # has no majority (top share 0.5) and is not counted.
    np.testing.assert_array_equal(correct.numpy()[:2], [1.0, 0.0])
    np.testing.assert_array_equal(counted.numpy(), [1.0, 1.0, 0.0])
    task = TripletTask(0.5)
    metrics = task.make_metrics()
    embeddings = tf.stack(LINE)
    no_majority = np.float32([[0.5, 0.5, 0.0]] * 3)
    task.update_metrics(metrics, no_majority, embeddings, task.loss(no_majority, embeddings))
    assert metrics["triplet_accuracy"].count.numpy() == 0  # the empty batch adds nothing ...
    majority = np.float32([[0.2, 0.1, 0.7]] * 3)
    task.update_metrics(metrics, majority, embeddings, task.loss(majority, embeddings))
    assert (
        metrics["triplet_accuracy"].result().numpy() == 1.0
    )  # ... not a 0 in the mean (0.5), not NaN
    np.testing.assert_allclose(metrics["loss"].result().numpy(), (8.75 + 2.1) / 2, rtol=1e-6)


def test_vectorized_loss_matches_numpy_loop_eagerly_and_in_tf_function():
    e1, e2, e3 = _embeddings()
    expected = _numpy_loss(e1, e2, e3, delta=2.0)
    assert 0 < np.count_nonzero(expected) < len(expected)  # both hinge branches exercised
    np.testing.assert_allclose(
        triplet_loss.triplet_loss_per_example(e1, e2, e3, 2.0), expected, rtol=1e-5
    )
    compiled = tf.function(triplet_loss.triplet_loss_per_example, jit_compile=True)
    np.testing.assert_allclose(compiled(e1, e2, e3, 2.0), expected, rtol=1e-5)


def test_vote_weighting():
    e1, e2, e3 = _embeddings(batch=8)
    votes = np.linspace(0.4, 1.0, 8).astype(np.float32)
    per_example = _numpy_loss(e1, e2, e3, delta=1.0)
    expected = np.sum(votes * per_example) / np.sum(votes)
    np.testing.assert_allclose(
        triplet_loss.weighted_triplet_loss(e1, e2, e3, votes, 1.0), expected, rtol=1e-5
    )
    # (batch, 1) votes are the same weights, not a (batch, batch) broadcast.
    np.testing.assert_allclose(
        triplet_loss.weighted_triplet_loss(e1, e2, e3, votes[:, None], 1.0), expected, rtol=1e-5
    )
    # A triplet with zero votes does not count; equal votes give the plain mean.
    zeroed = votes.copy()
    zeroed[0] = 0
    np.testing.assert_allclose(
        triplet_loss.weighted_triplet_loss(e1, e2, e3, zeroed, 1.0),
        np.sum(zeroed * per_example) / np.sum(zeroed),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        triplet_loss.weighted_triplet_loss(e1, e2, e3, np.full(8, 0.7), 1.0),
        per_example.mean(),
        rtol=1e-5,
    )
    # A global normalizer: the two halves' losses sum to the whole batch's.
    halves = [
        triplet_loss.weighted_triplet_loss(
            e1[s], e2[s], e3[s], votes[s], 1.0, normalizer=votes.sum()
        )
        for s in (slice(0, 4), slice(4, 8))
    ]
    np.testing.assert_allclose(sum(halves), expected, rtol=1e-5)


def test_accuracy_with_majority_filter():
    near, far = np.zeros((1, 4)), np.full((1, 4), 3.0)
    right = (near, near + 0.1, far)  # I1, I2 close: agrees with the annotators
    wrong = (near, far, near + 0.1)  # I1 closer to I3
    e1, e2, e3 = (
        np.concatenate(parts).astype(np.float32) for parts in zip(right, right, wrong, wrong)
    )
    np.testing.assert_allclose(triplet_loss.triplet_accuracy(e1, e2, e3), 0.5)
    # Only triplets with a top vote fraction above 0.5 count.
    np.testing.assert_allclose(triplet_loss.triplet_accuracy(e1, e2, e3, [0.9, 0.5, 0.4, 1.0]), 0.5)
    np.testing.assert_allclose(triplet_loss.triplet_accuracy(e1, e2, e3, [0.9, 0.6, 0.5, 0.5]), 1.0)
    np.testing.assert_allclose(triplet_loss.triplet_accuracy(e1, e2, e3, [0.5, 0.6, 0.9, 0.5]), 0.5)
    np.testing.assert_allclose(triplet_loss.triplet_accuracy(e1, e2, e3, [0.5] * 4), 0.0)
    # d12 must beat both other distances strictly: here d12 == d13 == 16.
    ties = triplet_loss.triplet_correct(ZEROS, ONES, -ONES)
    assert not ties.numpy().any()


@pytest.mark.parametrize("backbone", ["mlp", "cnn_bn"])
def test_embeddings_have_norm_scale(backbone):
    model = triplet_loss.build_embedding_model(
        backbone, input_shape=(28, 28, 1), embedding_dim=16, scale=3.0, seed=0
    )
    images = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    embeddings = model(images, training=True)
    assert embeddings.shape == (5, 16) and embeddings.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 3.0, rtol=1e-5)


def test_embedding_model_mixed_precision_and_save_load(tmp_path):
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        model = triplet_loss.build_embedding_model("cnn", input_shape=(28, 28, 1), scale=2.0)
    finally:
        keras.config.set_dtype_policy("float32")
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    embeddings = model(images)
    assert embeddings.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 2.0, rtol=1e-5)
    path = str(tmp_path / "embedding.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0)
    )


def test_dropout_sits_before_the_embedding_layer():
    model = triplet_loss.build_embedding_model(
        "cnn", input_shape=(28, 28, 1), embedding_dim=8, dropout=0.5, seed=0
    )
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["embedding_dropout", "logits", "l2_normalize"]
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 1
    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))
    assert not np.allclose(model(images, training=True), model(images, training=False))


def test_pretrained_backbone_offline_is_one_clear_line(monkeypatch):
    from framework.data.datasets import DataError

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what keras.utils.get_file raises

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(
        DataError, match="Could not download the ImageNet weights for efficientnetv2_b0"
    ) as error:
        triplet_loss.build_embedding_model(
            "efficientnetv2_b0", input_shape=(32, 32, 3), pretrained=True
        )
    assert "\n" not in str(error.value) and "--pretrained" in str(error.value)


def test_make_class_triplets():
    y = np.repeat(np.arange(5), [1, 2, 3, 10, 30])  # class 0 has a single example: never an anchor
    x = np.zeros((len(y), 2))
    a, b, c = fec_data.make_class_triplets(x, y, 5000, seed=0)
    assert a.shape == b.shape == c.shape == (5000,) and a.dtype == np.int64
    assert np.all(y[a] == y[b]) and np.all(a != b) and np.all(y[c] != y[a])
    assert not np.any(y[a] == 0)
    # Every other member of a class is reachable as `b`, every other-class example as `c`.
    assert {(i, j) for i, j in zip(a, b) if y[i] == 2} == {
        (i, j) for i in np.flatnonzero(y == 2) for j in np.flatnonzero(y == 2) if i != j
    }
    assert set(c[y[a] == 1]) == set(np.flatnonzero(y != 1))
    again = fec_data.make_class_triplets(x, y, 5000, seed=0)
    other = fec_data.make_class_triplets(x, y, 5000, seed=1)
    assert all(np.array_equal(p, q) for p, q in zip((a, b, c), again))
    assert not np.array_equal(a, other[0])


@pytest.mark.parametrize(
    "y,match",
    [
        (np.zeros(4), "at least 2 classes"),
        (np.arange(4), "a class with at least 2 examples"),
        (np.zeros((4, 2)), "1-D"),
    ],
)
def test_make_class_triplets_errors(y, match):
    with pytest.raises(ValueError, match=match):
        fec_data.make_class_triplets(np.zeros(len(y)), y, 3, seed=0)


def _face(k):
    """A distinct, JPEG-friendly 24x24 RGB face: flat colour k."""
    colour = np.array([40 * k % 256, 255 - 30 * k % 256, 90 + 20 * k % 166], np.uint8)
    return np.broadcast_to(colour, (24, 24, 3)).copy()


def _write_fec_sample(tmp_path, rows, faces=range(6), header=fec_data.FEC_COLUMNS):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for k in faces:
        (image_dir / f"f{k}.jpg").write_bytes(tf.io.encode_jpeg(_face(k), quality=95).numpy())
    csv_path = tmp_path / "fec.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(csv_path), str(image_dir)


ROWS = [
    # face1, face2, face3, votes1..3 (who picked each face as the odd one), subset
    ("f0", "f1", "f2", 0, 1, 5, "train"),  # odd f2 -> (f0, f1, f2), top 5/6
    ("f3", "f4", "f5", 4, 0, 0, "train"),  # odd f3 -> (f4, f5, f3), top 1
    ("f1", "f2", "f3", 0.2, 0.7, 0.1, "train"),  # fractions; odd f2 -> (f1, f3, f2), top 0.7
    ("f5", "f4", "f0", 2, 2, 1, "test"),  # tie: the first, f5, is odd -> (f4, f0, f5), top 0.4
]


def test_load_fec_round_trip(tmp_path):
    csv_path, image_dir = _write_fec_sample(tmp_path, ROWS)
    x1, x2, x3, votes = fec_data.load_fec(csv_path, image_dir, image_size=16)
    assert x1.shape == x2.shape == x3.shape == (3, 16, 16, 3) and x1.dtype == np.float32
    np.testing.assert_allclose(votes, [5 / 6, 1.0, 0.7], rtol=1e-6)
    for images, ids in ((x1, [0, 4, 1]), (x2, [1, 5, 3]), (x3, [2, 3, 2])):
        expected = np.stack([_face(k)[:16, :16] / 255.0 for k in ids])
        np.testing.assert_allclose(images, expected, atol=0.03)  # JPEG is lossy

    x1, x2, x3, votes = fec_data.load_fec(
        csv_path, image_dir, image_size=(8, 12), subset="test", channels=1
    )
    assert x1.shape == (1, 8, 12, 1)
    np.testing.assert_allclose(votes, [0.4])
    everything = fec_data.load_fec(csv_path, image_dir, image_size=8, subset=None)
    assert len(everything[3]) == 4


def test_load_fec_errors(tmp_path):
    csv_path, image_dir = _write_fec_sample(tmp_path, ROWS, faces=[0, 1, 2, 3, 5])
    with pytest.raises(FileNotFoundError, match=r"f4\.jpg \(face2 on line 3 of .*fec\.csv\)"):
        fec_data.load_fec(csv_path, image_dir)
    with pytest.raises(
        ValueError, match="no rows with subset 'val' \\(subsets present: test, train\\)"
    ):
        fec_data.load_fec(csv_path, image_dir, subset="val")

    bad = tmp_path / "bad"
    bad.mkdir()
    csv_path, image_dir = _write_fec_sample(
        bad, ROWS, header=("face1", "face2", "face3", "v1", "votes2", "votes3", "subset")
    )
    with pytest.raises(ValueError, match="missing column\\(s\\) votes1"):
        fec_data.load_fec(csv_path, image_dir)

    zero = tmp_path / "zero"
    zero.mkdir()
    csv_path, image_dir = _write_fec_sample(zero, ROWS[:1] + [("f0", "f1", "f2", 0, 0, 0, "train")])
    with pytest.raises(ValueError, match="line 3: votes1, votes2, votes3 must be non-negative"):
        fec_data.load_fec(csv_path, image_dir)

    with open(tmp_path / "images" / "f4.jpg", "w") as f:
        f.write("not a jpeg")
    csv_path, image_dir = str(tmp_path / "fec.csv"), str(tmp_path / "images")
    with pytest.raises(ValueError, match="f4.jpg: unreadable image file: not a JPEG or PNG file"):
        fec_data.load_fec(csv_path, image_dir)


def test_adabound_matches_its_definition_step_by_step():
    """Three steps of AdaBound against the paper's update written out in numpy; the tiny third
    gradient's Adam step size (~1e4) is clipped to the upper bound final_lr * (1 + 1 / (gamma t))
    (~100 at t = 1)."""
    from trainers import optimizers

    w0, grads = (
        np.float32([1.0, -2.0, 0.5]),
        [
            np.float32([0.5, -30.0, 1e-5]),
            np.float32([0.2, 10.0, -1e-5]),
            np.float32([-0.1, 5.0, 2e-5]),
        ],
    )
    lr, final_lr, b1, b2, gamma, eps = 0.01, 0.1, 0.9, 0.999, 1e-3, 1e-8
    optimizer = optimizers.build_optimizer("adabound", lr)
    variable = tf.Variable(w0)
    w, m, v = w0.astype(np.float64), np.zeros(3), np.zeros(3)
    for t, g in enumerate(grads, start=1):
        optimizer.apply_gradients([(tf.constant(g), variable)])
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g.astype(np.float64) ** 2
        step = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        bounds = final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))
        raw = step / (np.sqrt(v) + eps)
        assert raw[2] > bounds[1] > raw[0]  # the bound binds for one weight only
        w -= np.clip(raw, *bounds) * m
        np.testing.assert_allclose(variable.numpy(), w, rtol=1e-5)
    assert not np.allclose(w, w0)


def _many_rows(n_train=32, n_test=8):
    """Rows over the 6 faces of _write_fec_sample, votes varying with the row."""
    rows = []
    for i in range(n_train + n_test):
        a, b, c = i % 6, (i + 1 + i // 6) % 6, (i + 3) % 6
        b = b if b not in (a, c) else (a + 2) % 6
        rows.append(
            (f"f{a}", f"f{b}", f"f{c}", i % 3, (i + 1) % 4, 2, "train" if i < n_train else "test")
        )
    return rows


@pytest.mark.slow
def test_fec_streams_in_seeded_order_and_resumes_exactly(tmp_path):
    csv_path, image_dir = _write_fec_sample(tmp_path, _many_rows())
    rows = fec_data.read_fec_rows(csv_path, image_dir, subset="train")
    np.testing.assert_allclose(rows.shares.sum(axis=1), 1.0, rtol=1e-6)
    source = fec_data.FECTriplets(rows, (16, 16, 3))
    triplets, shares = source.arrays()
    assert (
        triplets.shape == (32, 3, 16, 16, 3)
        and triplets.dtype == np.uint8
        and shares.shape == (32, 3)
    )
    ctx = tf.distribute.InputContext()

    def steps(start, count, seed=0):
        fn = source.train_dataset_fn(global_batch_size=8, seed=seed, start_step=start)
        return [tuple(part.numpy()[0] for part in chunk) for chunk in fn(ctx).take(count)]

    stream = steps(0, 8)  # two epochs of 4 steps
    for images, batch_shares in stream:  # every streamed row is one of the decoded rows, in uint8
        assert images.dtype == np.uint8
        for image, share in zip(images, batch_shares):
            match = np.flatnonzero(
                (shares == share).all(1) & (triplets == image).reshape(32, -1).all(1)
            )
            assert len(match) >= 1
    epoch0 = np.concatenate([s for _, s in stream[:4]])
    assert sorted(map(tuple, epoch0)) == sorted(map(tuple, shares))  # each row once per epoch
    assert not np.array_equal(
        epoch0, np.concatenate([s for _, s in stream[4:]])
    )  # epoch 1: another order
    for a, b in zip(steps(5, 3), stream[5:]):  # a resume at step 5 continues the same stream
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(steps(0, 1, seed=1)[0][1], stream[0][1])


@pytest.mark.slow
def test_fec_trains_streamed_exactly_as_in_memory(tmp_path):
    from framework import TrainConfig
    from trainers import triplet

    csv_path, image_dir = _write_fec_sample(tmp_path, _many_rows())
    results = {}
    for mode in ("no", "yes"):
        cfg = TrainConfig(
            model_dir=str(tmp_path / mode),
            train_steps=4,
            steps_per_loop=2,
            global_batch_size=8,
            export=False,
            seed=3,
        )
        results[mode] = triplet.run_triplet(
            cfg,
            dataset="fec",
            fec_csv=csv_path,
            fec_images=image_dir,
            image_size=16,
            model="mlp",
            data_in_memory=mode,
        )
    assert np.isfinite(results["no"]["test_loss"])
    assert results["no"]["weights_fingerprint"] == results["yes"]["weights_fingerprint"]
    # Bad input is refused before anything is written: a missing image folder, a CSV missing a
    # column.
    with pytest.raises(FileNotFoundError, match="FEC image folder .*nowhere not found"):
        triplet.run_triplet(
            TrainConfig(model_dir=str(tmp_path / "bad")),
            dataset="fec",
            fec_csv=csv_path,
            fec_images=str(tmp_path / "nowhere"),
        )
    assert not (tmp_path / "bad").exists()
    # A header over --max_image_pixels (the faces are 24x24 = 576 pixels) is refused naming the
    # file, in memory and streaming alike; a negative limit is a bad flag.
    for mode in ("yes", "no"):
        with pytest.raises(
            ValueError, match=r"f\d\.jpg: unreadable image file: over max_image_pixels=500 pixels"
        ):
            triplet.run_triplet(
                TrainConfig(
                    model_dir=str(tmp_path / f"bomb_{mode}"),
                    train_steps=2,
                    global_batch_size=8,
                    export=False,
                ),
                dataset="fec",
                fec_csv=csv_path,
                fec_images=image_dir,
                image_size=16,
                model="mlp",
                data_in_memory=mode,
                max_image_pixels=500,
            )
    from framework import ConfigError

    with pytest.raises(ConfigError, match=r"--max_image_pixels=-1: must be >= 0"):
        triplet.run_triplet(
            TrainConfig(model_dir=str(tmp_path / "neg")),
            dataset="fec",
            fec_csv=csv_path,
            fec_images=image_dir,
            max_image_pixels=-1,
        )
    assert not (tmp_path / "neg").exists()
    # A face cut in half met while streaming (unchecked: JPEGs, --on_corrupt=fail): TensorFlow's
    # decode error, traced to the file.
    face = os.path.join(image_dir, "f1.jpg")
    data = open(face, "rb").read()
    with open(face, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"f1\.jpg: unreadable image file: (JPEG header )?truncated"
    ):
        triplet.run_triplet(
            TrainConfig(
                model_dir=str(tmp_path / "garbled"),
                train_steps=2,
                global_batch_size=8,
                export=False,
            ),
            dataset="fec",
            fec_csv=csv_path,
            fec_images=image_dir,
            image_size=16,
            model="mlp",
            data_in_memory="no",
        )


@pytest.mark.slow
def test_notebook_options_evaluate_every_n_steps_on_a_subset_with_curves(tmp_path, data_dir):
    """steps_per_epoch=3 (the notebook's 200): evaluations at steps 3 and 6 on a fixed sample of 64
    test triplets; the stream goes on across those epochs; AdaBound, dropout and --plot."""
    import json

    from framework import TrainConfig
    from trainers import triplet, triplet_train

    data = triplet_train.load_triplets(
        "mnist", data_dir=data_dir, num_train=512, num_test=256, seed=0, eval_triplets=64
    )
    assert len(data.evals["test"][0]) == 64 and data.evals["test"][1].shape == (64, 3)
    cfg = TrainConfig(
        model_dir=str(tmp_path), train_steps=6, steps_per_loop=3, global_batch_size=32, export=False
    )
    result = triplet.run_triplet(
        cfg,
        dataset="mnist",
        data_dir=data_dir,
        num_train=512,
        num_test=256,
        eval_triplets=64,
        steps_per_epoch=3,
        optimizer="adabound",
        dropout=0.1,
        plot=True,
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step"] == [3, 6] and result["epochs"] == 2.0
    assert (tmp_path / "curves.png").stat().st_size > 0

    stepped = triplet_train.StepsEpoch(
        data.train, 3, 32
    )  # 16 steps of data per pass, epochs of 3 steps
    ctx = tf.distribute.InputContext()
    from framework import input_pipeline

    plain = input_pipeline.train_dataset_fn(data.train, global_batch_size=32, seed=0)(ctx)
    chunks = stepped.train_dataset_fn(global_batch_size=32, seed=0, steps_per_fetch=3)(ctx)
    first = next(iter(chunks))[0].numpy()  # [3 steps, 32, 3, 28, 28, 1] images
    np.testing.assert_array_equal(first, np.stack([c[0].numpy()[0] for c in plain.take(3)]))


@pytest.mark.slow
def test_triplet_sweep_over_scale_with_repeats(tmp_path, data_dir):
    import json

    from trainers import repeats

    given = dict(
        model_dir=str(tmp_path),
        data_dir=data_dir,
        train_steps=2,
        steps_per_loop=2,
        global_batch_size=32,
        num_train=128,
        num_test=64,
        model="mlp",
    )
    rows = repeats.sweep("triplet", None, grid="scale=2,4", repeats=2, **given)
    assert [row["scale"] for row in rows] == ["2", "4"] and all(row["runs"] == 2 for row in rows)
    assert json.loads((tmp_path / "sweep.json").read_text()) == rows
    results = [
        json.loads((tmp_path / f"scale-{s}" / f"repeat_{i}" / "result.json").read_text())
        for s in (2, 4)
        for i in (0, 1)
    ]
    assert [r["config"]["scale"] for r in results] == [2.0, 2.0, 4.0, 4.0]
    assert [r["config"]["seed"] for r in results] == [0, 1, 0, 1]
    assert len({r["weights_fingerprint"] for r in results}) == 4
    assert not (
        tmp_path / "scale-2" / "repeat_0" / "model.keras"
    ).exists()  # no export per repeat unless asked
