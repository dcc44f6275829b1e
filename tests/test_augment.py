"""augment/: every op eagerly, in tf.function and under XLA on real CIFAR-10 and MNIST images; named
policies under XLA and across replicas; the preview CLI with a stand-in loader."""

import functools
import os
import types

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import augment
from augment import ops, preview
from augment.example_ops import alternating_flip
from augment.ops import geometric, mixing
from framework import input_pipeline

DATA = os.environ.get(
    "DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")
)
B = 8
SEED = tf.constant([1, 2])

# (registry name, options that make the op visible, options of zero strength)
OPS = {
    "flip": ("flip", {}, {"prob": 0.0}),
    "crop": ("crop", {"padding": 4}, {"padding": 0}),
    "crop_zero": (
        "crop",
        {"padding": 4, "fill_mode": "constant"},
        {"padding": 0, "fill_mode": "constant"},
    ),
    "rotate": ("rotate", {"max_degrees": 20.0}, {"max_degrees": 0.0}),
    "translate": ("translate", {"max_fraction": 0.2}, {"max_fraction": 0.0}),
    "zoom": ("zoom", {"max_fraction": 0.2}, {"max_fraction": 0.0}),
    "affine_nearest_constant": (
        "affine",
        {
            "max_degrees": 30.0,
            "max_fraction": 0.1,
            "max_zoom": 0.2,
            "interpolation": "nearest",
            "fill_mode": "constant",
        },
        {},
    ),
    "cutout": ("cutout", {"size": 8}, {"size": 0}),
    "erase": ("erase", {"prob": 1.0}, {"prob": 0.0}),
    "brightness": ("brightness", {"max_delta": 0.3}, {"max_delta": 0.0}),
    "contrast": ("contrast", {"max_delta": 0.5}, {"max_delta": 0.0}),
    "saturation": ("saturation", {"max_delta": 0.5}, {"max_delta": 0.0}),
    "hue": ("hue", {"max_delta": 0.2}, {"max_delta": 0.0}),
    "mixup": ("mixup", {"alpha": 1.0}, {"prob": 0.0}),
    "cutmix": ("cutmix", {}, {"prob": 0.0}),
    "mixup_or_cutmix": ("mixup_or_cutmix", {}, {"prob": 0.0}),
    "shear": ("shear", {"max_degrees": 20.0, "max_degrees_y": 10.0}, {"max_degrees": 0.0}),
    "brightness_scale": ("brightness_scale", {"factors": (0.6, 1.4)}, {"factors": (1.0, 1.0)}),
    "crop_to": ("crop_to", {"size": 24}, {"size": 32}),
    "affine_prob": (
        "affine",
        {"max_degrees": 30.0, "max_shear": 10.0, "prob": 0.7},
        {"max_degrees": 30.0, "prob": 0.0},
    ),  # prob= on an op without one of its own
}
CROPPED = {"crop_to": 24}  # cases whose output is smaller: the side they crop to
MIXING = ("mixup", "cutmix", "mixup_or_cutmix")
FLOAT_ONLY = ("mixup", "mixup_or_cutmix")


def _needs(path):
    if not os.path.exists(path):
        pytest.skip(f"shared dataset {path} not found")
    return path


@pytest.fixture(scope="module")
def cifar():
    """B CIFAR-10 test images, float32 [0, 1], and int32 labels (decodes only these few JPEGs)."""
    with np.load(_needs(os.path.join(DATA, "cifar10_jpeg.npz"))) as f:
        blob, offsets, labels = f["test_jpeg"], f["test_offsets"], f["y_test"][:B]
    images = [tf.io.decode_jpeg(blob[offsets[i] : offsets[i + 1]].tobytes()) for i in range(B)]
    return tf.cast(tf.stack(images), tf.float32) / 255.0, tf.constant(labels, tf.int32)


@pytest.fixture(scope="module")
def mnist():
    with np.load(_needs(os.path.join(DATA, "mnist.npz"))) as f:
        images, labels = f["x_test"][:B, :, :, None], f["y_test"][:B]
    return tf.constant(images, tf.float32) / 255.0, tf.constant(labels, tf.int32)


@functools.cache
def compiled(case):
    """(policy, tf.function, tf.function with XLA) for one op, shared by the tests that use it."""
    name, options, _ = OPS[case]
    policy = augment.compose([(name, options)], num_classes=10, name=case)
    return policy, tf.function(policy), tf.function(policy, jit_compile=True)


def _assert_images(out, like, atol=1e-6, side=None):
    """`out` has the shape of `like` (with a `side` x `side` image), its dtype, and values in [0,
    1]."""
    shape = like.shape if side is None else (like.shape[0], side, side, like.shape[3])
    assert out.shape == shape and out.dtype == like.dtype
    assert float(tf.reduce_min(out)) >= -atol and float(tf.reduce_max(out)) <= 1.0 + atol


@pytest.mark.parametrize("case", OPS)
@pytest.mark.slow
def test_op_contract(case, cifar):
    """Same result eagerly, in tf.function and under XLA; shape, dtype and range kept; reproducible
    with a seed, different across seeds, and each sample of a batch of one repeated image drawn on
    its own."""
    x, y = cifar
    policy, graph, jit = compiled(case)
    eager = policy(x, y, SEED)
    for other in (graph(x, y, SEED), jit(x, y, SEED)):
        np.testing.assert_allclose(other[0], eager[0], atol=1e-5)
        np.testing.assert_allclose(other[1], eager[1], atol=1e-5)
    _assert_images(eager[0], x, side=CROPPED.get(case))
    assert policy.output_shape(x.shape[1:]) == tuple(eager[0].shape[1:])
    if case in MIXING:
        assert eager[1].shape == (B, 10) and eager[1].dtype == tf.float32
        np.testing.assert_allclose(tf.reduce_sum(eager[1], -1), 1.0, atol=1e-6)
    else:
        np.testing.assert_array_equal(eager[1], y)
    assert case in CROPPED or not np.allclose(eager[0], x), "the op left the batch unchanged"
    np.testing.assert_array_equal(policy(x, y, SEED)[0], eager[0])
    assert not np.allclose(jit(x, y, tf.constant([3, 4]))[0], eager[0]), (
        "another seed gave the same batch"
    )
    if case not in MIXING:  # mixing identical images gives identical images; see test_mixing_*
        same = jit(tf.repeat(x[:1], B, axis=0), y, SEED)[0].numpy()
        assert len({s.tobytes() for s in same}) > 1, "every sample got the same parameters"


@pytest.mark.parametrize("case", OPS)
def test_op_on_mnist(case, mnist):
    """1-channel images: shape, dtype and range kept; saturation and hue are exact no-ops."""
    x, y = mnist
    out, labels = compiled(case)[0](x, y, SEED)
    _assert_images(out, x, side=CROPPED.get(case))
    if case in ("saturation", "hue"):
        np.testing.assert_array_equal(out, x)
    assert labels.shape == ((B, 10) if case in MIXING else (B,))


@pytest.mark.parametrize("case", OPS)
def test_zero_strength_is_identity(case, cifar):
    x, y = cifar
    name, _, zero = OPS[case]
    out, labels = augment.compose([(name, zero)], num_classes=10)(x, y, SEED)
    np.testing.assert_allclose(out, x, atol=1e-6, rtol=0)
    if case in MIXING:
        np.testing.assert_array_equal(labels, tf.one_hot(y, 10))


@pytest.mark.parametrize("case", OPS)
def test_uint8(case, cifar):
    """uint8 [0, 255] in, uint8 out, except the ops documented float-only (a TypeError)."""
    x, y = cifar
    x8 = tf.cast(tf.round(x * 255.0), tf.uint8)
    policy = compiled(case)[0]
    if case in FLOAT_ONLY:
        with pytest.raises(TypeError, match="float32"):
            policy(x8, y, SEED)
        return
    out = policy(x8, y, SEED)[0]
    assert out.dtype == tf.uint8 and out.shape[1:3] == (CROPPED.get(case, 32),) * 2
    if case in (
        "flip",
        "crop",
        "crop_zero",
        "crop_to",
        "cutout",
        "cutmix",
    ):  # they only move pixels
        np.testing.assert_array_equal(
            out, tf.cast(tf.round(policy(x, y, SEED)[0] * 255.0), tf.uint8)
        )


def _window_offsets(x, out, pad, np_mode):
    """For each sample, the (dy, dx) at which `out` is a window of `x` padded by `pad` (np.pad
    mode)."""
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode=np_mode)
    h, w = x.shape[1:3]
    offsets = []
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.array_equal(padded[i, dy : dy + h, dx : dx + w], out[i])
        ]
        assert hits, f"sample {i} is no {h}x{w} window of the {np_mode}-padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 1, "every sample got the same window"
    return offsets


@pytest.mark.slow
def test_crop_to_is_a_window_inside_and_evaluation_takes_the_centre(cifar):
    """Each output is a 24x20 window fully inside its image, at its own offset; evaluation images
    get the centre window, which the policy's eval_transform applies (also when prob= leaves samples
    out)."""
    x = cifar[0].numpy()
    out = ops.random_crop_to(x, SEED, size=(24, 20)).numpy()
    assert out.shape == (B, 24, 20, 3)
    offsets = set()
    for i in range(B):
        hits = [
            (dy, dx)
            for dy in range(9)
            for dx in range(13)
            if np.array_equal(x[i, dy : dy + 24, dx : dx + 20], out[i])
        ]
        assert hits, f"sample {i} is no window of its image"
        offsets.add(hits[0])
    assert len(offsets) > 1, "every sample got the same window"
    policy = augment.get_policy(
        "crop_to:size=(24,20),prob=0.5", num_classes=10, image_shape=(32, 32, 3)
    )
    assert policy.output_shape((32, 32, 3)) == (24, 20, 3)
    np.testing.assert_array_equal(policy.eval_transform(x), x[:, 4:28, 6:26])
    picked = policy(x, cifar[1], SEED)[0].numpy()
    centred = [np.array_equal(p, c) for p, c in zip(picked, x[:, 4:28, 6:26])]
    assert 0 < sum(centred) < B, "prob=0.5 should crop some samples at random and centre the others"
    assert (
        augment.get_policy("flip,shear", num_classes=10, image_shape=(32, 32, 3)).eval_transform
        is None
    )


@pytest.mark.parametrize(
    "spec,own",
    [
        ("affine:max_degrees=30,max_shear=10,prob=0.7", "affine:max_degrees=30,max_shear=10"),
        ("brightness_scale:prob=0.3", "brightness_scale"),
    ],
)
def test_prob_applies_the_op_to_a_masked_share_of_samples(cifar, spec, own):
    """prob= on any op: each sample is either exactly the op's output (the op draws as it would
    alone) or exactly the input, in about that share of 64 samples (XLA:
    test_op_contract[affine_prob])."""
    x = tf.tile(cifar[0], [8, 1, 1, 1])
    y = tf.tile(cifar[1], [8])
    policy = augment.get_policy(spec, num_classes=10, image_shape=(32, 32, 3))
    out = policy(x, y, SEED)[0].numpy()
    full = augment.get_policy(own, num_classes=10, image_shape=(32, 32, 3))(x, y, SEED)[0].numpy()
    applied = np.array([np.array_equal(o, f) for o, f in zip(out, full)])
    kept = np.array([np.array_equal(o, i) for o, i in zip(out, x.numpy())])
    assert (applied ^ kept).all(), "a sample is neither the op's output nor the input"
    prob = float(spec.rsplit("=", 1)[1])
    assert abs(applied.mean() - prob) < 0.15, (
        f"{applied.mean():.2f} of the samples got the op, not ~{prob}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("axis", ["x", "y"])
def test_shear_matches_a_pixel_shift_per_row(axis):
    """A 45-degree shear along x moves row r by (r - centre) pixels (x_in = x + (y - cy)), nearest
    and constant fill, about the centre of a 9x9 image; along y, columns likewise."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 9, 9, 3)).astype(np.float32)
    angles = (np.pi / 4, 0.0) if axis == "x" else (0.0, np.pi / 4)
    out = ops.shear(x, *angles, interpolation="nearest", fill_mode="constant").numpy()
    want = np.zeros_like(x)
    for r in range(9):
        for c in range(9):
            src = (r, c + (r - 4)) if axis == "x" else (r + (c - 4), c)
            if 0 <= src[0] < 9 and 0 <= src[1] < 9:
                want[:, r, c] = x[:, src[0], src[1]]
    np.testing.assert_array_equal(out, want)
    jit = tf.function(
        functools.partial(ops.shear, interpolation="nearest", fill_mode="constant"),
        jit_compile=True,
    )
    np.testing.assert_array_equal(jit(x, *angles), want)


def test_brightness_scale_multiplies_each_image_by_one_factor(cifar):
    """ImageDataGenerator's brightness_range: out = clip(f x) with one f per sample in [0.8,
    1.2]."""
    x = cifar[0].numpy()
    out = ops.random_brightness_scale(x, SEED, factors=(0.8, 1.2)).numpy()
    factors = []
    for i in range(B):
        inside = (x[i] > 0.05) & (out[i] < 0.999)
        ratio = out[i][inside] / x[i][inside]
        np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-5)
        factors.append(ratio.mean())
        np.testing.assert_allclose(out[i], np.clip(x[i] * ratio.mean(), 0, 1), atol=1e-6)
    assert 0.8 <= min(factors) and max(factors) <= 1.2 and np.ptp(factors) > 0.1


@pytest.mark.parametrize(
    "fill_mode,np_mode",
    [
        ("reflect", "reflect"),
        ("constant", "constant"),
        ("symmetric", "symmetric"),
        ("wrap", "wrap"),
    ],
)
def test_crop_is_a_window_of_the_padded_image(cifar, fill_mode, np_mode):
    x = cifar[0].numpy()
    _window_offsets(x, ops.random_crop(x, SEED, padding=4, fill_mode=fill_mode).numpy(), 4, np_mode)


def test_translation_moves_content(cifar):
    """Nearest-neighbour translation is a whole-pixel shift of the content: out(y, x) = in(y - ty, x
    - tx), content moving right/down for positive shifts; bilinear agrees at those shifts."""
    x = cifar[0].numpy()
    shifts = tf.constant([[0.0, 0.0], [3.0, 0.0], [0.0, -5.0], [2.0, 7.0]] * 2)  # (tx, ty)
    m = geometric._affine_matrices(32, 32, tf.zeros([B]), shifts[:, 0], shifts[:, 1], tf.ones([B]))
    for interpolation in ("nearest", "bilinear"):
        out = ops.affine_transform(x, m, interpolation=interpolation, fill_mode="constant").numpy()
        offsets = _window_offsets(x, out, 8, "constant")
        assert [(8 - dy, 8 - dx) for dy, dx in offsets] == [
            (int(ty), int(tx)) for tx, ty in shifts.numpy()
        ]
    out = ops.random_translation(
        x, SEED, max_fraction=0.2, interpolation="nearest", fill_mode="constant"
    )
    _window_offsets(x, out.numpy(), 7, "constant")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotate_by_quarter_turns_matches_rot90(cifar, mnist, k):
    for x in (cifar[0], mnist[0]):  # constant fill: a wrong map can't be rescued by reflection
        want = tf.image.rot90(x, k)
        got = ops.rotate(x, k * np.pi / 2, interpolation="nearest", fill_mode="constant")
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(
            ops.rotate(x, k * np.pi / 2, fill_mode="constant"), want, atol=2e-5
        )


def test_rotate_under_xla_and_per_sample_angles(cifar):
    x = cifar[0]
    angles = tf.constant([0.0, np.pi / 2, np.pi, -np.pi / 2] * 2)
    out = tf.function(functools.partial(ops.rotate, fill_mode="constant"), jit_compile=True)(
        x, angles
    )
    for i, k in enumerate([0, 1, 2, 3] * 2):
        np.testing.assert_allclose(out[i], tf.image.rot90(x[i], k), atol=2e-5)


@pytest.mark.parametrize("fully_inside", [True, False])
def test_cutout_patch_size(cifar, fully_inside):
    """Counts the zeroed pixels: exactly h*w when fully inside, else a clipped rectangle of at least
    ceil(h/2)*ceil(w/2); every other pixel is untouched."""
    h, w = 12, 16
    x = cifar[0]
    ones = tf.ones_like(x)
    zeroed = (
        ops.random_cutout(ones, SEED, size=(h, w), fully_inside=fully_inside).numpy() == 0
    ).all(-1)
    clipped = 0
    for i in range(B):
        rows, cols = np.nonzero(zeroed[i])
        box_h, box_w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert zeroed[i].sum() == box_h * box_w, "the zeroed pixels are not one rectangle"
        if fully_inside:
            assert (box_h, box_w) == (h, w)
        else:
            assert h // 2 <= box_h <= h and w // 2 <= box_w <= w
            clipped += (box_h, box_w) != (h, w)
    assert fully_inside or clipped, "no patch reached the border (pick a seed where one does)"
    out = ops.random_cutout(x, SEED, size=(h, w), fully_inside=fully_inside).numpy()
    np.testing.assert_array_equal(out[~zeroed], x.numpy()[~zeroed])
    assert (out[zeroed] == 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("case", MIXING)
def test_mixing_label_weights_match_pixels(case):
    """Constant images c_i = (i + 1) / (B + 1) with class i: each output pixel is w c_i + (1 - w)
    c_j, and the label weight of sample i must equal mean(w) (cutmix: the kept area fraction
    exactly)."""
    coded = tf.broadcast_to(
        tf.reshape(tf.range(1, B + 1, dtype=tf.float32) / (B + 1), [B, 1, 1, 1]), [B, 32, 32, 3]
    )
    labels = tf.range(B, dtype=tf.int32)
    out, soft = (
        t.numpy() for t in compiled(case)[2](coded, labels, SEED)
    )  # shares the XLA compile
    np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-6)
    own = []
    for i in range(B):
        others = [j for j in range(10) if j != i and soft[i, j] > 0]
        assert len(others) <= 1
        if not others:
            np.testing.assert_allclose(out[i], coded[i])
            continue
        c_i, c_j = (i + 1) / (B + 1), (others[0] + 1) / (B + 1)
        w = (out[i, ..., 0] - c_j) / (c_i - c_j)
        if case == "cutmix":
            assert np.isin(np.round(w, 5), [0.0, 1.0]).all(), (
                "cutmix pixels must come from one image"
            )
            rows, cols = np.nonzero(w < 0.5)
            assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1), (
                "pasted region is not a box"
            )
        np.testing.assert_allclose(soft[i, i], w.mean(), atol=1e-5)
        own.append(soft[i, i])
    assert len(own) >= B // 2 and np.ptp(own) > 0.05, "mixing weights are not drawn per sample"


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_beta_sampler_moments(alpha):
    """Beta(alpha, alpha) from our XLA-friendly sampler: mean 1/2, variance 1 / (4 (2 alpha +
    1))."""
    n = 20000
    lam = mixing._beta(ops.core.Draws(SEED, mixing._BETA_ROWS, n), alpha).numpy()
    assert 0.0 <= lam.min() and lam.max() <= 1.0
    assert abs(lam.mean() - 0.5) < 0.01
    assert abs(lam.var() / (1.0 / (4.0 * (2.0 * alpha + 1.0))) - 1.0) < 0.05


def test_normalize(cifar):
    x = cifar[0]
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = ops.normalize(x, mean=mean, std=std)
    np.testing.assert_allclose(out, (x.numpy() - mean) / std, rtol=1e-6, atol=1e-6)
    x8 = tf.cast(tf.round(x * 255.0), tf.uint8)
    np.testing.assert_allclose(ops.normalize(x8, mean=mean, std=std), out, atol=1 / 255 / 0.24)


def test_step_seed():
    fn = tf.function(augment.step_seed, jit_compile=True)
    seeds = {
        tuple(fn(7, tf.constant(s, tf.int64), tf.constant(r)).numpy())
        for s in range(3)
        for r in range(2)
    }
    assert len(seeds) == 6, "steps and replicas must get different seeds"
    got = fn(7, tf.constant(5, tf.int64), tf.constant(1))
    assert got.dtype == tf.int32 and got.shape == (2,)
    np.testing.assert_array_equal(got, augment.step_seed(7, 5, 1))
    assert not np.array_equal(augment.step_seed(8, 5, 1), got)


@pytest.mark.slow
def test_replicas_augment_differently(cifar):
    """Under MirroredStrategy (2 logical CPUs), each replica folds its id into the seed: same global
    seed and step, different augmentation; replica r equals the eager policy with step_seed(seed,
    step, r)."""
    x, y = cifar
    policy = augment.get_policy("flip_crop", num_classes=10, image_shape=(32, 32, 3))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    @tf.function(jit_compile=True)
    def augment_on_replica(images, labels, step):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return policy(images, labels, augment.step_seed(0, step, replica))[0]

    @tf.function
    def run(step):
        return strategy.run(augment_on_replica, args=(x, y, step))

    outs = strategy.experimental_local_results(run(tf.constant(3, tf.int64)))
    assert not np.array_equal(outs[0], outs[1])
    for r, out in enumerate(outs):
        np.testing.assert_array_equal(out, policy(x, y, augment.step_seed(0, 3, r))[0])


@pytest.mark.parametrize("name", ["none", "flip_crop", "standard", "strong"])
@pytest.mark.slow
def test_named_policies_under_xla(name, cifar, mnist):
    for x, y in (cifar, mnist):
        policy = augment.get_policy(name, num_classes=10, image_shape=x.shape[1:])
        assert policy.soft_labels == (name == "strong")
        eager = policy(x, y, SEED)
        out, labels = tf.function(policy, jit_compile=True)(x, y, SEED)
        np.testing.assert_allclose(out, eager[0], atol=1e-5)
        np.testing.assert_allclose(labels, eager[1], atol=1e-5)  # exp/log differ in XLA
        _assert_images(out, x)
        if policy.soft_labels:
            assert labels.shape == (B, 10) and labels.dtype == tf.float32
            np.testing.assert_allclose(tf.reduce_sum(labels, -1), 1.0, atol=1e-6)
        else:
            np.testing.assert_array_equal(labels, y)
        names = str(policy)
        assert ("random_flip_lr" in names) == (
            name != "none" and x.shape[-1] == 3
        )  # no flips for digits
        assert ("random_hue" in names) == (name == "strong" and x.shape[-1] == 3)


@pytest.mark.slow
def test_policy_in_tf_data_map(cifar):
    """The host-side alternative: the same policy in a tf.data map gives the same batch."""
    x, y = cifar
    policy = augment.get_policy("standard", num_classes=10, image_shape=(32, 32, 3))
    ds = tf.data.Dataset.from_tensors((x, y)).map(lambda a, b: policy(a, b, SEED))
    np.testing.assert_array_equal(next(iter(ds))[0], policy(x, y, SEED)[0])


def test_get_policy_errors_and_specs():
    with pytest.raises(ValueError, match=r"'strnog'.*flip_crop.*standard.*strong"):
        augment.get_policy("strnog", num_classes=10, image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"'flop'.*valid ops.*cutout"):
        augment.get_policy("flop,crop", num_classes=10, image_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="num_classes"):
        augment.compose(["flip", "mixup"])
    assert augment.parse_spec(
        "flip,crop:padding=4,fill_mode=constant,normalize:mean=(0.4,0.5,0.6),std=0.2"
    ) == [
        ("flip", {}),
        ("crop", {"padding": 4, "fill_mode": "constant"}),
        ("normalize", {"mean": (0.4, 0.5, 0.6), "std": 0.2}),
    ]
    policy = augment.get_policy(
        "flip,crop:padding=2,cutmix:alpha=0.5", num_classes=10, image_shape=(32, 32, 3)
    )
    assert policy.soft_labels and len(policy.steps) == 3
    by_hand = augment.compose(
        [
            ops.random_flip_lr,
            functools.partial(ops.random_crop, padding=2),
            functools.partial(ops.cutmix, alpha=0.5),
        ],
        num_classes=10,
    )
    x = tf.random.stateless_uniform([B, 32, 32, 3], [5, 6])
    for a, b in zip(policy(x, tf.range(B), SEED), by_hand(x, tf.range(B), SEED)):
        np.testing.assert_array_equal(a, b)
    assert "flip" in ops.OPS and ops.OPS.get("cutmix").mixes_labels


@pytest.mark.parametrize("data,policy_name", [("cifar", "standard"), ("mnist", "strong")])
def test_preview_writes_png(tmp_path, monkeypatch, request, data, policy_name):
    x, y = request.getfixturevalue(data)
    fake = types.SimpleNamespace(
        x_train=np.round(x.numpy() * 255).astype(np.uint8),
        y_train=y.numpy(),
        class_names=tuple("abcdefghij"),
        num_classes=10,
    )
    monkeypatch.setattr(preview, "load_dataset", lambda name, data_dir: fake)
    out = str(tmp_path / "grid.png")
    fv = flags.FlagValues()
    preview.define_flags(fv)
    fv(
        [
            "preview",
            f"--dataset={data}",
            f"--augment={policy_name}",
            f"--out={out}",
            "--rows=3",
            "--cols=2",
        ]
    )
    preview.main(["preview"], fv)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(out).shape[0] > 100


def _stream(arrays, steps, **kwargs):
    fn = input_pipeline.train_dataset_fn(arrays, global_batch_size=16, seed=3, **kwargs)
    return [
        tuple(t.numpy() for t in element)
        for element in fn(tf.distribute.InputContext()).take(steps)
    ]


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    """Epoch 0 mirrors a random half; each later epoch mirrors exactly the images the one before did
    not."""
    images = np.random.default_rng(0).integers(
        0, 256, (64, 5, 6, 1), dtype=np.uint8
    )  # 4 steps an epoch
    arrays = (images, np.arange(64))
    flip = alternating_flip(64, seed=3)
    stream = _stream(arrays, 16, example_fn=flip)
    mirrored = np.zeros((4, 64), bool)
    for step, (chunk, ids) in enumerate(stream):
        for image, i in zip(chunk[0], ids[0]):
            assert (image == images[i]).all() or (image == images[i][:, ::-1]).all()
            mirrored[step // 4, i] = (image != images[i]).any()
    assert 0.3 < mirrored[0].mean() < 0.7
    for epoch in (1, 2, 3):
        np.testing.assert_array_equal(mirrored[epoch], ~mirrored[epoch - 1])
    # A resume rebuilds the same stream; the host-augmentation path mirrors the same images.
    resumed = _stream(arrays, 10, example_fn=flip, start_step=6)
    host = _stream(arrays, 16, example_fn=flip, host_fn=lambda batch, step, replica: batch)
    for a, b in zip(stream[6:] + stream, resumed + host):
        np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="alternating_flip mirrors images"):
        input_pipeline.train_dataset_fn(
            (np.zeros((64, 784)),), global_batch_size=16, seed=3, example_fn=flip
        )(tf.distribute.InputContext())
