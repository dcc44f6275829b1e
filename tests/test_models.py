"""Tests for trainers.models and trainers.optimizers on tiny random inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainers import models, optimizers

SHAPES = [(28, 28, 1), (32, 32, 3)]
OWN_MODELS = [m for m in models.MODELS if not m.startswith("efficientnet")]
SMALL_RESNET9 = (8, 16, 16, 32)  # channels, to keep the resnet9 tests fast


def _images(shape, batch=2, seed=0):
    return np.random.default_rng(seed).random((batch, *shape), dtype=np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", models.MODELS)
def test_builds_float32_logits(name, shape):
    model = models.build_model(name, input_shape=shape, num_classes=7, seed=0)
    for training in (False, True):
        logits = model(_images(shape, batch=3), training=training)
        assert logits.shape == (3, 7)
        assert logits.dtype == tf.float32
        assert np.all(np.isfinite(logits.numpy()))


@pytest.mark.parametrize("name", OWN_MODELS + ["efficientnet_b0"])
def test_seed_gives_identical_weights_and_other_seed_differs(name):
    def weights(seed):
        return models.build_model(
            name,
            input_shape=(32, 32, 3),
            num_classes=3,
            seed=seed,
            dropout=0.5 if name == "mlp" else 0.0,
        ).get_weights()

    first, again, other = weights(1), weights(1), weights(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # airbench's square convs start as the identity whatever the seed.
    kernels = [
        (a, b) for a, b in zip(first, other, strict=True) if a.ndim >= 2 and not _is_identity(a)
    ]
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)


def _is_identity(kernel):
    if kernel.ndim != 4 or kernel.shape[2] != kernel.shape[3]:
        return False
    identity = np.zeros_like(kernel)
    identity[
        kernel.shape[0] // 2,
        kernel.shape[1] // 2,
        np.arange(kernel.shape[2]),
        np.arange(kernel.shape[2]),
    ] = 1
    return np.array_equal(kernel, identity)


def test_seeded_dropout_is_deterministic():
    def output(seed):
        model = models.build_model("cnn_dropout", input_shape=(28, 28, 1), num_classes=4, seed=seed)
        return model(_images((28, 28, 1)), training=True).numpy()

    np.testing.assert_array_equal(output(3), output(3))


def test_variants_have_their_layers():
    def layer_types(name, **kwargs):
        model = models.build_model(name, input_shape=(28, 28, 1), num_classes=2, **kwargs)
        return {type(layer) for layer in model.layers}

    assert keras.layers.BatchNormalization in layer_types("cnn_bn")
    assert keras.layers.BatchNormalization not in layer_types("cnn")
    assert keras.layers.Dropout in layer_types("cnn_dropout")
    assert keras.layers.Dropout not in layer_types("cnn")
    rates = {
        layer.rate
        for layer in models.build_model(
            "cnn_dropout", input_shape=(28, 28, 1), num_classes=2, dropout=0.4
        ).layers
        if isinstance(layer, keras.layers.Dropout)
    }
    assert rates == {0.4}
    mlp = layer_types("mlp", batchnorm=True, dropout=0.1)
    assert {keras.layers.BatchNormalization, keras.layers.Dropout} <= mlp
    dense = [
        layer
        for layer in models.build_model(
            "mlp", input_shape=(28, 28, 1), num_classes=2, widths=(5, 6, 7), activation="tanh"
        ).layers
        if isinstance(layer, keras.layers.Dense)
    ]
    assert [layer.units for layer in dense] == [5, 6, 7, 2]


@pytest.mark.parametrize("name", ["cnn_bn", "resnet9", "efficientnet_b0"])
def test_sync_batchnorm(name):
    widths = SMALL_RESNET9 if name == "resnet9" else None
    model = models.build_model(
        name, input_shape=(32, 32, 3), num_classes=2, widths=widths, sync_batchnorm=True
    )
    bns = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bns and all(bn.synchronized for bn in bns)


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.slow
def test_two_replicas_equal_one_with_sync_batchnorm(sync):
    """With synchronized BN, a training step on 2 replicas updates BN statistics as 1 device
    does."""
    images, labels = _images((28, 28, 1), batch=8), np.arange(8) % 3
    reference = models.build_model("cnn_bn", input_shape=(28, 28, 1), num_classes=3, seed=0)
    reference(images, training=True)

    # ReductionToOneDevice, not the default collectives: every MirroredStrategy in a process starts
    # at the same collective keys, and TensorFlow then refuses collectives of a different shape.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        model = models.build_model(
            "cnn_bn", input_shape=(28, 28, 1), num_classes=3, seed=0, sync_batchnorm=sync
        )
        optimizer = optimizers.build_optimizer("sgd", 0.1)
        optimizer.build(model.trainable_variables)  # not lazily inside the replica function

    @tf.function
    def step(images, labels):
        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = (
                    tf.reduce_sum(
                        keras.losses.sparse_categorical_crossentropy(
                            labels, logits, from_logits=True
                        )
                    )
                    / 8
                )
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        per_replica = strategy.run(replica_step, args=(images, labels))
        return strategy.reduce("SUM", per_replica, axis=None)

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    assert np.isfinite(step(*next(iter(strategy.experimental_distribute_dataset(dataset)))))
    expected = reference.get_layer("dense_bn").moving_variance.numpy()
    got = model.get_layer("dense_bn").moving_variance.numpy()
    if sync:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    else:  # per-replica statistics of 4 examples differ from those of 8
        assert np.abs(got - expected).max() > 1e-3


@pytest.mark.parametrize("name", ["cnn_bn", "resnet9", "efficientnetv2_b0"])
def test_mixed_bfloat16_logits_stay_float32(name):
    try:
        keras.config.set_dtype_policy("mixed_bfloat16")
        widths = SMALL_RESNET9 if name == "resnet9" else None
        model = models.build_model(name, input_shape=(28, 28, 1), num_classes=5, widths=widths)
        assert model.layers[1].compute_dtype == "bfloat16"
        logits = model(_images((28, 28, 1)), training=True)
    finally:
        keras.config.set_dtype_policy("float32")
    assert logits.dtype == tf.float32 and logits.shape == (2, 5)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("mlp", {"batchnorm": True, "dropout": 0.2}),
        ("cnn_bn", {}),
        ("resnet9", {"widths": SMALL_RESNET9}),
        ("airbench", {"widths": (8, 16, 16)}),
    ],
)
@pytest.mark.slow
def test_keras_save_load_safe_mode(tmp_path, name, kwargs):
    model = models.build_model(name, input_shape=(32, 32, 3), num_classes=4, seed=0, **kwargs)
    images = _images((32, 32, 3), batch=4)
    model(images, training=True)  # move the BatchNorm statistics away from their initial values
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    )


def _no_network(*args, **kwargs):
    raise Exception("URL fetch failure: no network")  # what keras.utils.get_file raises


def test_pretrained_offline_raises_clear_error(monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", _no_network)
    with pytest.raises(RuntimeError, match="ImageNet weights") as error:
        models.build_model(
            "efficientnet_b0", input_shape=(32, 32, 3), num_classes=10, pretrained=True
        )
    message = str(error.value)
    assert "efficientnetb0_notop.h5" in message and "~/.keras/models" in message
    assert "--pretrained" in message
    with pytest.raises(ValueError, match="pretrained"):
        models.build_model("cnn", input_shape=(32, 32, 3), num_classes=10, pretrained=True)


@pytest.mark.slow
def test_pretrained_failing_inside_keras_applications_raises_clear_error(monkeypatch):
    # Our download succeeds (say, a corrupt cached file), keras.applications' own one then fails.
    monkeypatch.setattr(keras.utils, "get_file", lambda *args, **kwargs: "cached.h5")
    from keras.src.utils import file_utils  # where keras.applications looks get_file up

    monkeypatch.setattr(file_utils, "get_file", _no_network)
    with pytest.raises(RuntimeError, match="efficientnetv2-b0_notop.h5 into ~/.keras/models"):
        models.build_model(
            "efficientnetv2_b0", input_shape=(32, 32, 3), num_classes=10, pretrained=True
        )


@pytest.mark.parametrize("name", ["cnn_bn", "resnet9", "efficientnet_b0"])
def test_freeze_backbone_leaves_only_the_head_trainable(name):
    widths = SMALL_RESNET9 if name == "resnet9" else None
    model = models.build_model(
        name, input_shape=(28, 28, 1), num_classes=6, widths=widths, freeze_backbone=True
    )
    trainable = model.trainable_weights
    assert {tuple(w.shape) for w in trainable} <= {
        (widths[-1] if widths else 64, 6),
        (6,),
        (1280, 6),
    }
    assert sum(int(np.prod(w.shape)) for w in trainable) < model.count_params() / 10
    # BatchNorm in a frozen backbone uses its moving statistics even when training.
    images = _images((28, 28, 1), batch=4)
    np.testing.assert_allclose(
        model(images, training=True), model(images, training=False), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "vgg"}, "`name` \\('vgg'\\) must be one of airbench, cnn"),
        ({"input_shape": (28, 28)}, "`input_shape`"),
        ({"num_classes": 0}, "`num_classes` \\(0\\)"),
        ({"widths": (8, 8)}, "`widths` \\(\\(8, 8\\)\\): resnet9 takes 4 positive widths"),
        ({"activation": "nope"}, "`activation` \\('nope'\\)"),
        ({"dropout": 1.5}, "`dropout` \\(1.5\\)"),
        ({"seed": -1}, "`seed` \\(-1\\)"),
        ({"name": "efficientnet_b0", "widths": (1, 2, 3, 4)}, "`widths` .* does not apply"),
        (
            {"name": "efficientnet_b0", "activation": "gelu"},
            "`activation` \\('gelu'\\) does not apply",
        ),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    args = {"name": "resnet9", "input_shape": (32, 32, 3), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        models.build_model(args.pop("name"), **args)


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS)
@pytest.mark.parametrize("schedule", [False, True])
def test_each_optimizer_takes_a_step(name, schedule):
    learning_rate = 0.01
    if schedule:
        learning_rate = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=10)
    optimizer = optimizers.build_optimizer(name, learning_rate, weight_decay=1e-4)
    variable = tf.Variable([1.0, -2.0])
    optimizer.apply_gradients([(tf.constant([0.5, 0.5]), variable)])
    assert int(optimizer.iterations.numpy()) == 1
    assert np.all(variable.numpy() < [1.0, -2.0])


def test_optimizer_arguments():
    sgd = optimizers.build_optimizer("sgd", 0.1, momentum=0.8, nesterov=True)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.8
    assert optimizers.build_optimizer("adam", 1e-3, beta_1=0.8).beta_1 == 0.8
    assert optimizers.build_optimizer("adamw", 1e-3, weight_decay=0.05).weight_decay == 0.05
    with pytest.raises(ValueError, match="`name` \\('adagrad'\\) must be one of sgd, adam"):
        optimizers.build_optimizer("adagrad", 0.1)
    with pytest.raises(ValueError, match="`nesterov` \\(True\\) does not apply to adam"):
        optimizers.build_optimizer("adam", 0.1, nesterov=True)
    with pytest.raises(ValueError, match="`learning_rate`"):
        optimizers.build_optimizer("sgd", -1.0)


@pytest.mark.slow
def test_airbench_whitening_conv_whitens_real_patches(cifar):
    from trainers import airbench_net

    images = cifar.x_train[:2000].astype(np.float32) / 255.0
    model = models.build_model(
        "airbench",
        input_shape=(32, 32, 3),
        num_classes=10,
        seed=0,
        whitening_images=cifar.x_train[:2000],
    )
    whiten = model.get_layer("whiten")
    assert not whiten.kernel.trainable and whiten.bias.trainable
    kernel, bias = whiten.kernel.numpy(), whiten.bias.numpy()
    expected_kernel, expected_bias = airbench_net.whitening_weights(images)
    np.testing.assert_allclose(kernel, expected_kernel, rtol=1e-6)
    np.testing.assert_allclose(bias, expected_bias, rtol=1e-5, atol=1e-5)
    out = whiten(images[:500]).numpy().reshape(-1, kernel.shape[-1])
    # Centred by the bias (airbench normalises its pixels to mean 0 instead).
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=0.1)
    cov = np.cov(out[:, :12], rowvar=False)  # the other 12 channels are the same, negated
    # Unit variance along the directions well above the whitening epsilon, nothing across them.
    np.testing.assert_allclose(np.diag(cov)[:6], 1.0, atol=0.1)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.1
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-4)


def test_airbench_convs_start_as_identity_on_their_first_filters():
    model = models.build_model(
        "airbench", input_shape=(32, 32, 3), num_classes=10, widths=(8, 16, 16), seed=0
    )
    conv = model.get_layer("group2_conv1")  # 8 -> 16 channels
    kernel = conv.kernel.numpy()
    identity = np.zeros((3, 3, 8, 8), np.float32)
    identity[1, 1, np.arange(8), np.arange(8)] = 1.0
    np.testing.assert_array_equal(kernel[..., :8], identity)
    assert np.abs(kernel[..., 8:]).max() > 0  # the rest stay random


def test_scaled_bias_trains_with_its_learning_rate_times_the_scale():
    from trainers.airbench_net import ScaledBias

    layer = ScaledBias(lr_scale=64.0)
    x = tf.zeros((1, 3))
    layer(x)
    optimizer = keras.optimizers.SGD(0.01)
    target = tf.constant([[1.0, -2.0, 0.5]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * target)  # d loss / d bias = target
    optimizer.apply_gradients(
        zip(tape.gradient(loss, layer.trainable_variables), layer.trainable_variables)
    )
    np.testing.assert_allclose(layer(x).numpy(), -0.01 * 64 * target.numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_airbench_fused_batchnorm_trains_as_keras_batchnorm(dtype):
    """Outputs, the input's gradient and the moving statistics of the fused kernel are Keras'
    (airbench's BN: no scale, no centre); inference is Keras' own call. Real activations: the
    whitened CIFAR-like statistics matter less than a mean and spread far from 0 and 1."""
    from trainers.airbench_net import FusedBatchNorm

    x = tf.random.stateless_normal((8, 7, 7, 16), seed=(1, 2)) * 3.0 + 1.5
    upstream = tf.random.stateless_normal((8, 7, 7, 16), seed=(3, 4))
    kwargs = dict(momentum=0.6, epsilon=1e-5, center=False, scale=False, dtype=dtype)
    fused, plain = FusedBatchNorm(**kwargs), keras.layers.BatchNormalization(**kwargs)
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        results.append(
            (
                tf.cast(y, tf.float32).numpy(),
                tape.gradient(loss, x).numpy(),
                layer.moving_mean.numpy(),
                layer.moving_variance.numpy(),
                tf.cast(layer(x, training=False), tf.float32).numpy(),
            )
        )
        assert y.dtype == (tf.bfloat16 if dtype == "mixed_bfloat16" else tf.float32)
    tolerance = 2e-2 if dtype == "mixed_bfloat16" else 1e-4  # bf16 outputs: 8 bits of mantissa
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
    assert (
        abs(results[0][3].mean() - (0.6 + 0.4 * 9.0)) < 0.5
    )  # the update moved towards the batch's variance ~9


def test_airbench_uses_the_fused_batchnorm_unless_synchronized():
    from trainers.airbench_net import FusedBatchNorm

    model = models.build_model(
        "airbench", input_shape=(32, 32, 3), num_classes=10, widths=(8, 16, 16), seed=0
    )
    assert isinstance(model.get_layer("group1_bn1"), FusedBatchNorm)
    x = tf.random.stateless_uniform((4, 32, 32, 3), seed=(5, 6))
    assert any(
        op.type == "FusedBatchNormV3"
        for op in tf.function(lambda x: model(x, training=True))
        .get_concrete_function(x)
        .graph.get_operations()
    )
    synced = models.build_model(
        "airbench",
        input_shape=(32, 32, 3),
        num_classes=10,
        widths=(8, 16, 16),
        seed=0,
        sync_batchnorm=True,
    )
    assert not any(
        op.type == "FusedBatchNormV3"
        for op in tf.function(lambda x: synced(x, training=True))
        .get_concrete_function(x)
        .graph.get_operations()
    )


# --- issue 17.2: the notebooks' templates ---------------------------------------------------------


def _layer_names(model, kind):
    return [layer.name for layer in model.layers if isinstance(layer, kind)]


def test_cnn_takes_any_conv_stack_padding_pools_and_dense_layers():
    model = models.build_model(
        "cnn",
        input_shape=(28, 28, 1),
        num_classes=10,
        widths=(8, 8, 8, 8, 8),
        padding="same",
        pool="1,3",
        dense_widths=(0,),
    )
    assert len(_layer_names(model, keras.layers.Conv2D)) == 5 and _layer_names(
        model, keras.layers.Dense
    ) == ["logits"]
    assert _layer_names(model, keras.layers.MaxPooling2D) == ["pool1", "pool3"]
    assert model.get_layer("flatten").output.shape[1:] == (
        7 * 7 * 8,
    )  # same padding: 28 -> 14 -> 7
    model = models.build_model(
        "cnn",
        input_shape=(28, 28, 1),
        num_classes=10,
        widths=(4, 6),
        pool="every",
        dense_widths=(16, 12),
        activation="relu,tanh,sigmoid,gelu",
    )
    assert _layer_names(model, keras.layers.Dense) == ["dense1", "dense2", "logits"]
    assert [
        model.get_layer(f"{n}_act").activation.__name__
        for n in ("conv1", "conv2", "dense1", "dense2")
    ] == ["relu", "tanh", "sigmoid", "gelu"]
    assert model.get_layer("flatten").output.shape[1:] == (
        5 * 5 * 6,
    )  # valid: 28 -> 26 -> 13 -> 11 -> 5
    assert (
        models.options_error("cnn", widths=(8,) * 5, image_size=28)
        == "cnn needs images of at least 78x78 pixels (--padding=same keeps the size; fewer "
        "--widths or pools shrink it less)"
    )
    assert (
        models.options_error("cnn", widths=(8,) * 5, padding="same", pool="1,2,3,4", image_size=28)
        is None
    )
    assert "at least 32x32" in models.options_error(
        "cnn", widths=(8,) * 5, padding="same", pool="every", image_size=28
    )


def test_mlp_with_no_hidden_layer_is_linear_and_takes_one_activation_per_layer():
    linear = models.build_model("mlp", input_shape=(28, 28, 1), num_classes=10, widths=(0,))
    assert (
        _layer_names(linear, keras.layers.Dense) == ["logits"]
        and linear.count_params() == 28 * 28 * 10 + 10
    )
    model = models.build_model(
        "mlp", input_shape=(28, 28, 1), num_classes=10, widths=(16, 8), activation="relu,sigmoid"
    )
    assert [model.get_layer(f"dense{i}_act").activation.__name__ for i in (1, 2)] == [
        "relu",
        "sigmoid",
    ]
    with pytest.raises(ValueError, match="3 activations for 2 hidden layers"):
        models.build_model("mlp", input_shape=(4,), num_classes=2, activation="relu,relu,relu")


# --- issue 17.1 and 17.3: your own model, .keras files, warm starts -------------------------------

MY_MODEL = """
import keras

def build(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])

def three_outputs(input_shape, num_classes):
    return build(input_shape, 3)

def not_a_model(input_shape, num_classes):
    return "a string"

def seeded(input_shape, num_classes, seed):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed))])
"""  # noqa: E501


@pytest.fixture
def my_model_file(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(MY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "my_models.py"


def test_model_from_a_file_a_module_or_a_callable_is_built_and_checked(my_model_file):
    from framework import ConfigError
    from trainers import model_source

    for spec in (f"{my_model_file}:build", "my_models:build", f"{my_model_file}:seeded"):
        model = model_source.build(spec, input_shape=(28, 28, 1), num_outputs=10, seed=1)
        assert model.output_shape == (None, 10)
    a, b = (
        model_source.build(f"{my_model_file}:seeded", input_shape=(4,), num_outputs=2, seed=1)
        for _ in "ab"
    )
    np.testing.assert_array_equal(
        a.get_weights()[0], b.get_weights()[0]
    )  # seed= is passed when taken
    for spec, message in (
        (
            f"{my_model_file}:three_outputs",
            r"output has shape \(batch, 3\); this task needs \(batch, 10\)",
        ),
        (f"{my_model_file}:not_a_model", "returned str, not a Keras model"),
        ("my_models:nothing", "has no function 'nothing' .*'build'"),
    ):
        with pytest.raises(ConfigError, match=message):
            model_source.build(spec, input_shape=(28, 28, 1), num_outputs=10)
    assert model_source.build(
        lambda input_shape, num_classes: models.build_model(
            "mlp", input_shape=input_shape, num_classes=num_classes
        ),
        input_shape=(4,),
        num_outputs=3,
    ).output_shape == (None, 3)


def test_warm_start_copies_every_weight_and_a_new_head_of_another_size(tmp_path):
    from framework import ConfigError
    from trainers import model_source

    source = models.build_model(
        "mlp", input_shape=(28, 28, 1), num_classes=10, widths=(16,), seed=1
    )
    source.save(tmp_path / "source.keras")
    values = model_source.initial_values(str(tmp_path / "source.keras"))
    binary = models.build_model("mlp", input_shape=(28, 28, 1), num_classes=1, widths=(16,), seed=2)
    model_source.warm_start(binary, values, path="source.keras", what="--model=mlp")
    np.testing.assert_array_equal(
        binary.get_layer("dense1").get_weights()[0], source.get_layer("dense1").get_weights()[0]
    )
    assert binary.get_layer("logits").get_weights()[0].shape == (16, 1)  # the new head, as built
    with pytest.raises(ConfigError, match="its weights do not fit --model=mlp"):
        model_source.warm_start(
            models.build_model("mlp", input_shape=(28, 28, 1), num_classes=10, widths=(32,)),
            values,
            path="source.keras",
            what="--model=mlp",
        )
    model_source.freeze_backbone(binary)
    assert [w.path for w in binary.trainable_weights] == ["logits/kernel", "logits/bias"]


@pytest.mark.slow
def test_init_from_a_run_starts_at_its_accuracy_and_a_saved_keras_model_fine_tunes(
    tmp_path, data_dir
):
    import json

    from trainers import model_source, recipes
    from trainers.experiment import run_experiment

    def run(name, **options):
        exp, config = recipes.configs(
            "mnist",
            None,
            smoke=True,
            model_dir=str(tmp_path / name),
            data_dir=data_dir,
            eval_at_start=True,
            predictions=False,
            **options,
        )
        result = run_experiment(exp, config)
        with open(tmp_path / name / "history.json") as f:
            return result, json.load(f)

    first, fresh = run(
        "run1",
        model="mlp",
        widths=(32,),
        train_steps=24,
        learning_rate=3e-3,
        lr_schedule="constant",
    )
    _, warm = run(
        "run2", model="mlp", widths=(32,), init_from=str(tmp_path / "run1"), train_steps=2
    )
    assert fresh["test_accuracy"][0] < 0.3 and first["test_accuracy"] > 0.6
    assert warm["test_accuracy"][0] == pytest.approx(
        first["test_accuracy"], abs=1e-6
    )  # step 0 = run 1's end
    # The same weights as a .keras file, fine-tuned with a frozen backbone (run 1 of staged
    # fine-tuning).
    model = models.build_model("mlp", input_shape=(28, 28, 1), num_classes=10, widths=(32,))
    model_source.warm_start(
        model, model_source.initial_values(str(tmp_path / "run1")), path="run1", what="mlp"
    )
    model.save(tmp_path / "run1.keras")
    _, tuned = run("run3", model=str(tmp_path / "run1.keras"), freeze_backbone=True, train_steps=2)
    assert tuned["test_accuracy"][0] == pytest.approx(first["test_accuracy"], abs=1e-6)


def test_fused_gelu_is_keras_gelu_forward_and_backward_and_reloads(tmp_path):
    """trainers/activations.py's XLA-compiled GELU (4x faster at the fast net's shapes) computes
    Keras' exact GELU and its gradient, keeps bf16 in bf16, and a model using it saves and loads."""
    import tensorflow as tf

    from trainers.activations import gelu

    x = tf.constant(np.linspace(-8, 8, 2001), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours, theirs = gelu(x), keras.activations.gelu(x)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    np.testing.assert_allclose(tape.gradient(ours, x), tape.gradient(theirs, x), atol=2e-6)
    half = gelu(tf.cast(x, tf.bfloat16))
    assert half.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(half, tf.float32), theirs, atol=0.04, rtol=0.01)
    model = models.build_model(
        "airbench",
        input_shape=(32, 32, 3),
        num_classes=10,
        widths=(8, 16, 16),
        activation="gelu",
        seed=0,
    )
    assert sum(getattr(layer, "activation", None) is gelu for layer in model.layers) == 7
    model.save(tmp_path / "m.keras")
    images = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
    np.testing.assert_array_equal(
        model(images), keras.saving.load_model(tmp_path / "m.keras", compile=False)(images)
    )
