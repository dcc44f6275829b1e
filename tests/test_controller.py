"""What the step and the controller report, and the controller's actions, on real MNIST."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import framework
from framework import ConfigError, build_trainer, input_pipeline, prepare_runtime
from tests import engine_helpers as h

L2 = 1e-2


def make_trainer(cfg, data, model_fn=None, optimizer_fn=h.sgd):
    cfg = cfg.replace(steps_per_fetch=cfg.steps_per_fetch or 1)  # these tests drive run_train by hand
    return build_trainer(cfg, data, model_fn=model_fn or h.mlp_fn(), optimizer_fn=optimizer_fn,
                         task=h.task(), strategy=prepare_runtime(cfg))


def train_iterator(trainer, data, cfg):
    fn = input_pipeline.train_dataset_fn(data.train, global_batch_size=cfg.global_batch_size, seed=cfg.seed)
    return iter(trainer.strategy.distribute_datasets_from_function(fn))


def first_batch(data, cfg):
    """The images and labels of step 0 (the data order is a function of seed and epoch)."""
    order = input_pipeline.epoch_permutation(len(data.train[0]), cfg.seed, 0).numpy()[:cfg.global_batch_size]
    return data.train[0][order].astype("float32") / 255.0, data.train[1][order]


def l2_model_fn():
    return keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", kernel_regularizer=keras.regularizers.L2(L2),
                           kernel_initializer=keras.initializers.GlorotUniform(3)),
        keras.layers.Dense(10, dtype="float32", kernel_regularizer=keras.regularizers.L2(L2),
                           kernel_initializer=keras.initializers.GlorotUniform(4))])


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_step_reports_reg_loss_global_grad_norm_and_lr_at_step_0(strategy):
    cfg = h.config(strategy=strategy, num_cpu_devices=2 if strategy == "mirrored" else 0, learning_rate=0.05)
    data = h.mnist_data()
    trainer = make_trainer(cfg, data, model_fn=l2_model_fn)
    kernels = [layer.kernel.numpy() for layer in trainer.model.layers[1:]]
    # By hand, on the same batch and the same initial weights: one replica, one tape.
    images, labels = first_batch(data, cfg)
    with tf.GradientTape() as tape:
        logits = trainer.model(images, training=True)
        data_loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        loss = data_loss + tf.add_n(trainer.model.losses)
    expected_norm = float(tf.linalg.global_norm(tape.gradient(loss, trainer.model.trainable_variables)))

    trainer.train_loop_begin()
    trainer.run_train(train_iterator(trainer, data, cfg), 1)
    got = trainer.train_loop_end()
    assert trainer.strategy.num_replicas_in_sync == (2 if strategy == "mirrored" else 1)
    np.testing.assert_allclose(got["reg_loss"], L2 * sum(np.sum(k.astype(np.float64) ** 2) for k in kernels),
                               rtol=1e-5)
    np.testing.assert_allclose(got["loss"], float(data_loss), rtol=1e-5)
    # The global gradient's norm: a per-replica norm (of half the batch's sum) would be about half of it.
    np.testing.assert_allclose(got["grad_norm"], expected_norm, rtol=1e-4)
    np.testing.assert_allclose(got["learning_rate"], 0.05, rtol=1e-6)  # constant schedule
    assert "skipped_steps" not in got  # only with fp16


def test_regularization_losses_are_summed_in_float32_under_bf16():
    # An activity regularizer on a bf16 layer gives a bf16 loss beside the kernels' float32 ones:
    # tf.add_n refuses the mix, and a bf16 sum would keep 3 digits.
    def model_fn():
        return keras.Sequential([
            keras.Input((28, 28, 1)), keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", kernel_regularizer=keras.regularizers.L2(L2),
                               activity_regularizer=keras.regularizers.L2(1e-4),
                               kernel_initializer=keras.initializers.GlorotUniform(3)),
            keras.layers.Dense(10, dtype="float32", kernel_initializer=keras.initializers.GlorotUniform(4))])
    cfg, data = h.config(mixed_precision="bf16"), h.mnist_data()
    trainer = make_trainer(cfg, data, model_fn=model_fn)
    hidden = trainer.model.layers[1]
    assert hidden.compute_dtype == "bfloat16"
    images, _ = first_batch(data, cfg)
    activations = tf.nn.relu(images.reshape(len(images), -1) @ hidden.kernel.numpy() + hidden.bias.numpy())
    expected = L2 * np.sum(hidden.kernel.numpy().astype(np.float64) ** 2) + 1e-4 * float(tf.reduce_sum(activations ** 2))
    trainer.train_loop_begin()
    trainer.run_train(train_iterator(trainer, data, cfg), 1)
    np.testing.assert_allclose(trainer.train_loop_end()["reg_loss"], expected, rtol=2e-2)  # bf16 activations


def test_fp16_reports_loss_scale_and_counts_skipped_steps():
    cfg, data = h.config(mixed_precision="fp16"), h.mnist_data()
    trainer = make_trainer(cfg, data)
    iterator = train_iterator(trainer, data, cfg)
    trainer.train_loop_begin()
    trainer.run_train(iterator, 4)
    normal = trainer.train_loop_end()
    assert normal["skipped_steps"] == 0 and normal["loss_scale"] == 2.0 ** 15 and normal["grad_norm"] > 0
    # A loss scale of 2**127 overflows float32: every gradient is Inf, the step is skipped and the scale halves.
    trainer.optimizer.dynamic_scale.assign(2.0 ** 127)
    before = h.weights(trainer.model)
    trainer.train_loop_begin()
    trainer.run_train(iterator, 1)
    forced = trainer.train_loop_end()
    assert forced["skipped_steps"] == 1 and forced["loss_scale"] == 2.0 ** 126
    assert forced["grad_norm"] == 0.0  # a skipped step is left out of the mean norm (none was applied)
    for a, b in zip(before, h.weights(trainer.model)):
        np.testing.assert_array_equal(a, b)
    assert int(trainer.step.numpy()) == 5
