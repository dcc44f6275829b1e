"""Our step against references computed another way: Keras `fit`, the host pipeline, numpy.

Each test would pass for the wrong reason only if both sides were wrong the same way: the Trainer's
one step equals `model.fit` on the same batch (L2 regularizer and label smoothing included), the
host-augmented run equals the device-augmented run for the same seed, and the padded evaluation on
2 replicas equals a numpy pass over every example once.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import augment
import framework
from framework import ClassificationTask, build_trainer, input_pipeline, prepare_runtime
from tests import engine_helpers as h
from trainers import evaluation


def _l2_mlp(l2=0.01):
    def build():
        reg = keras.regularizers.L2(l2)
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(
                    32,
                    activation="relu",
                    kernel_regularizer=reg,
                    kernel_initializer=keras.initializers.GlorotUniform(7),
                ),
                keras.layers.Dense(
                    10,
                    kernel_regularizer=reg,
                    kernel_initializer=keras.initializers.GlorotUniform(8),
                ),
            ]
        )

    return build


def _first_batch(data, cfg):
    """The batch our step 0 sees: the first element of the training pipeline (a chunk of one
    step)."""
    dataset = input_pipeline.train_dataset_fn(
        data.train, global_batch_size=cfg.global_batch_size, seed=cfg.seed
    )(tf.distribute.InputContext())
    images, labels = next(iter(dataset))
    return images.numpy()[0], labels.numpy()[0]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_one_step_equals_keras_fit_with_l2_and_label_smoothing(strategy):
    smoothing, lr = 0.1, 0.5
    cfg = h.config(
        strategy=strategy,
        num_cpu_devices=2 if strategy == "mirrored" else 0,
        learning_rate=lr,
        steps_per_fetch=1,
    )
    data = h.mnist_data(train=256)
    trainer = build_trainer(
        cfg,
        data,
        model_fn=_l2_mlp(),
        optimizer_fn=keras.optimizers.SGD,
        task=ClassificationTask(10, label_smoothing=smoothing),
        strategy=prepare_runtime(cfg),
    )
    start = h.weights(trainer.model)
    trainer.run_train(
        iter(
            trainer.strategy.distribute_datasets_from_function(
                input_pipeline.train_dataset_fn(
                    data.train, global_batch_size=cfg.global_batch_size, seed=cfg.seed
                )
            )
        ),
        1,
    )

    x, y = _first_batch(data, cfg)
    reference = _l2_mlp()()
    for a, b in zip(start, h.weights(reference)):
        np.testing.assert_array_equal(a, b)  # the same seeded initial weights
    reference.compile(
        optimizer=keras.optimizers.SGD(lr),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing),
    )
    reference.fit(
        x.astype(np.float32) / 255.0,
        keras.utils.to_categorical(y, 10),
        batch_size=len(x),
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    for ours, theirs, before in zip(h.weights(trainer.model), h.weights(reference), start):
        assert (
            np.abs(theirs - before).max() > 1e-3
        )  # the step moved the weights: the comparison means something
        np.testing.assert_allclose(ours, theirs, atol=2e-6)


@pytest.mark.slow
def test_host_augmentation_equals_device_augmentation_for_the_same_seed():
    """The same flip+crop per (seed, step, replica): in the tf.data map, or inside the step, on 2
    replicas. (The image test below shows the augmentation changes every batch: equal weights are
    not "both did nothing".)"""
    cfg = h.config(
        strategy="mirrored", num_cpu_devices=2, train_steps=12, steps_per_fetch=1, seed=3
    )
    policy = augment.get_policy("flip,crop:padding=4", num_classes=10, image_shape=(28, 28, 1))
    runs = {}
    for where in ("device", "host"):
        data = h.mnist_data()
        if where == "host":
            data.host_fn = evaluation.host_augment_fn(policy, cfg.seed)
        task = ClassificationTask(10, augment=policy if where == "device" else None)
        trainer = build_trainer(
            cfg,
            data,
            model_fn=h.mlp_fn(),
            optimizer_fn=h.sgd,
            task=task,
            strategy=prepare_runtime(cfg),
        )
        framework.Controller(trainer, data, cfg).run()
        runs[where] = h.weights(trainer.model)
    for a, b in zip(runs["device"], runs["host"]):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_host_and_device_augmentation_see_the_same_images():
    """Image by image: the host pipeline's batch of (step, replica) is the device's augmentation of
    the raw one."""
    seed, batch = 5, 16
    policy = augment.get_policy("flip,crop:padding=4", num_classes=10, image_shape=(28, 28, 1))
    data = h.mnist_data(train=256)
    ctx = tf.distribute.InputContext(num_replicas_in_sync=2)  # one pipeline feeding 2 replicas
    raw = iter(input_pipeline.train_dataset_fn(data.train, global_batch_size=batch, seed=seed)(ctx))
    host = iter(
        input_pipeline.train_dataset_fn(
            data.train,
            global_batch_size=batch,
            seed=seed,
            host_fn=evaluation.host_augment_fn(policy, seed),
        )(ctx)
    )
    task = ClassificationTask(10, augment=policy)
    changed = 0
    for step in range(3):
        for replica in range(2):  # consecutive elements go to consecutive replicas
            (raw_images, raw_labels), (host_images, host_labels) = next(raw), next(host)
            device_images, device_labels = task.prepare(
                (raw_images[0], raw_labels[0]),
                training=True,
                seed=augment.step_seed(seed, step, replica),
            )
            np.testing.assert_array_equal(host_images[0].numpy(), device_images.numpy())
            np.testing.assert_array_equal(host_labels[0].numpy(), device_labels.numpy())
            changed += not np.array_equal(device_images.numpy(), raw_images[0].numpy() / 255.0)
    assert changed == 6


@pytest.mark.slow
@pytest.mark.parametrize("num_examples", [500, 470])
def test_padded_evaluation_on_two_replicas_counts_every_example_once(num_examples):
    """500 = 7 x 64 + 52 (the second replica's last half-batch is partly padding), 470 = 7 x 64 + 22
    (all of it is padding): accuracy and loss must be those of a numpy pass over the model's
    logits."""
    cfg = h.config(strategy="mirrored", num_cpu_devices=2, train_steps=16, eval_batch_size=64)
    x, y, xt, yt = h.mnist_arrays()
    data = framework.Data(
        train=(x[:2048], y[:2048]), evals={"test": (xt[:num_examples], yt[:num_examples])}
    )
    trainer = build_trainer(
        cfg,
        data,
        model_fn=h.mlp_fn(),
        optimizer_fn=h.sgd,
        task=h.task(),
        strategy=prepare_runtime(cfg),
    )
    result = framework.Controller(
        trainer, data, cfg
    ).run()  # its final evaluation, as result.json has it
    logits = trainer.model.predict(
        xt[:num_examples].astype(np.float32) / 255.0, batch_size=256, verbose=0
    )
    log_probs = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    expected_loss = -log_probs[np.arange(num_examples), yt[:num_examples]].mean()
    expected_accuracy = (logits.argmax(-1) == yt[:num_examples]).mean()
    assert 0.3 < expected_accuracy < 0.99  # a model that distinguishes examples: padding would show
    np.testing.assert_allclose(result["test_accuracy"], expected_accuracy, rtol=1e-6)
    np.testing.assert_allclose(result["test_loss"], expected_loss, rtol=1e-5)
