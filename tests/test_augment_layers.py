"""augment.layers.Augment: the --augment policies as a Keras layer inside the model. Driven by our
Trainer it gives the same images as --augment for the same seed (so the same training); identity
(or the centre crop) with training=False; its own SeedGenerator elsewhere, under XLA too; saves as
.keras. Also crop_to end to end: the model is built for the cropped size, evaluation is
centre-cropped."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import augment
import framework
from augment import layers
from framework import ClassificationTask, Data, TrainConfig, seeds

SPEC = (
    "crop_to:size=24,prob=0.8,brightness_scale:factors=(0.6,1.4)"  # cheap to compile, draws 3 ways
)


@pytest.fixture(scope="module")
def digits(mnist):
    """256 training and 128 test MNIST digits, uint8 [N, 28, 28, 1]."""
    return Data(
        train=(mnist.x_train[:256], mnist.y_train[:256].astype(np.int32)),
        evals={"test": (mnist.x_test[:128], mnist.y_test[:128].astype(np.int32))},
    )


def _model(input_side, *front):
    return keras.Sequential(
        [
            keras.Input((input_side, input_side, 1)),
            *front,
            keras.layers.Flatten(),
            keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(3)),
        ]
    )


@pytest.mark.slow
def test_layer_in_the_trainer_trains_exactly_like_augment(digits):
    """The same policy as --augment (the task) or as a layer in the model, same run seed, 2
    replicas: the same augmented images at every step and replica (the step_seed call argument),
    hence the same weights; evaluation centre-crops in the task as in the layer, hence the same test
    loss."""
    config = TrainConfig(
        global_batch_size=32,
        train_steps=4,
        steps_per_loop=2,
        learning_rate=0.05,
        export=False,
        seed=5,
        strategy="mirrored",
        num_cpu_devices=2,
    )
    policy = augment.get_policy(SPEC, num_classes=10, image_shape=(28, 28, 1))
    runs = []
    for task, model_fn in (
        (
            ClassificationTask(10, augment=policy, eval_transform=policy.eval_transform),
            lambda: _model(24),
        ),
        (ClassificationTask(10), lambda: _model(28, layers.Augment(SPEC))),
    ):
        models = []
        result = framework.train(
            config,
            digits,
            model_fn=lambda: models.append(model_fn()) or models[-1],
            optimizer_fn=lambda lr: keras.optimizers.SGD(lr),
            task=task,
        )
        runs.append((result, [w.numpy() for w in models[0].trainable_weights]))
    (with_task, weights_task), (with_layer, weights_layer) = runs
    assert not np.allclose(weights_task[0], _model(24).trainable_weights[0].numpy()), (
        "the model did not train"
    )
    for a, b in zip(weights_task, weights_layer):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert with_task["test_loss"] == pytest.approx(with_layer["test_loss"], rel=1e-5)


def test_step_seed_argument_gives_the_policy_images(digits, caplog):
    """Given the step's seed s (the `step_seed` call argument the Trainer's step passes), the
    layer's output is policy(images, labels, s); a layer with seed=1 draws from fold_in(s, 1), other
    parameters; inside a Sequential model the argument reaches the layer; with training=False:
    identity, or the centre crop."""
    x = tf.constant(digits.train[0][:16], tf.float32) / 255.0
    y = tf.constant(digits.train[1][:16])
    seed = augment.step_seed(5, 3, 1)
    first, second = layers.Augment(SPEC), layers.Augment(SPEC, seed=1)
    a, b = first(x, training=True, step_seed=seed), second(x, training=True, step_seed=seed)
    want = augment.get_policy(SPEC, num_classes=10, image_shape=(28, 28, 1))(x, y, seed)[0]
    np.testing.assert_array_equal(a, want)
    assert a.shape == (16, 24, 24, 1) and not np.array_equal(a, b)
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Augment(SPEC)])
    assert seeds.takes_step_seed(model) and not seeds.takes_step_seed(_model(28))
    np.testing.assert_array_equal(seeds.call_with_step_seed(model, seed)(x, training=True), want)
    nested = keras.Sequential([keras.Input((28, 28, 1)), model])
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert seeds.call_with_step_seed(nested, seed) is nested
    assert model.layers[0].name in caplog.text and "nested model" in caplog.text
    np.testing.assert_array_equal(first(x, training=False), x[:, 2:26, 2:26])
    np.testing.assert_array_equal(layers.Augment("flip,shear:max_degrees=20")(x, training=False), x)


@pytest.mark.slow
def test_seed_generator_outside_the_trainer_under_xla(digits, tmp_path):
    """Outside our Trainer: the layer's SeedGenerator, a new draw at each call and per sample,
    compiled with jit_compile=True; the model saves and loads as .keras (safe mode) with the same
    policy."""
    x = tf.constant(digits.train[0][:8], tf.float32) / 255.0
    spec = "crop_to:size=24,prob=0.7,cutout:size=8"
    model = _model(28, layers.Augment(spec, seed=11))
    augmenting = keras.Model(model.inputs, model.layers[0].output)
    step = tf.function(lambda images: augmenting(images, training=True), jit_compile=True)
    one, two = step(x).numpy(), step(x).numpy()
    assert not np.array_equal(one, two), "the SeedGenerator did not advance"
    same_image = step(tf.repeat(x[:1], 8, axis=0)).numpy()
    assert len({s.tobytes() for s in same_image}) > 1, "every sample got the same parameters"
    np.testing.assert_array_equal(augmenting(x, training=False), x[:, 2:26, 2:26])
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode=True: no Lambda, our registered layer
    assert loaded.layers[0].get_config()["policy"] == spec
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


def test_layer_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="no label-mixing op"):
        layers.Augment("flip,mixup")
    with pytest.raises(ValueError, match="unknown augmentation op 'shera'"):
        layers.Augment("flip,shera")
    with pytest.raises(ValueError, match=r"`size` \(30\) must be between 1 and the 28x28 image"):
        _model(28, layers.Augment("crop_to:size=30"))


@pytest.mark.slow
def test_crop_to_end_to_end(data_dir, tmp_path):
    """recipes.configs('mnist', smoke=True, augment='crop_to:size=24,...'): the CNN is built for
    24x24, and the reported test loss is the model's on the centre-cropped test images (not another
    window)."""
    from trainers import recipes
    from trainers.experiment import load_data, run_experiment

    exp, config = recipes.configs(
        "mnist",
        None,
        smoke=True,
        augment="crop_to:size=24,shear:max_degrees=10,prob=0.5",
        model_dir=str(tmp_path),
        data_dir=data_dir,
    )
    seen = []
    result = run_experiment(
        exp, config, hooks=[lambda info: seen.append(info.controller.trainer.model)]
    )
    model = seen[-1]
    assert model.input_shape == (None, 24, 24, 1)
    x, y = load_data(exp, config.seed)[0].evals["test"]
    x = x.astype(np.float32) / 255.0

    def loss(window):
        logits = model.predict(np.ascontiguousarray(window), batch_size=256, verbose=0)
        return float(
            np.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        )

    assert result["test_loss"] == pytest.approx(loss(x[:, 2:26, 2:26]), rel=1e-4)
    assert result["test_loss"] != pytest.approx(loss(x[:, :24, :24]), rel=1e-3)
