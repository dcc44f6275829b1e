"""fp16 loss scaling on several replicas: one verdict for all replicas, and one counter for step and
LR."""

import engine_helpers as h
import keras
import numpy as np
import tensorflow as tf

from framework import build_trainer, input_pipeline, prepare_runtime


@keras.saving.register_keras_serializable(package="tests")
class Overflow(keras.layers.Layer):
    """x * inf on replica `replica` (None: every replica) for the first `steps` training calls."""

    def __init__(self, replica=None, steps=10**9, **kwargs):
        super().__init__(**kwargs)
        self.replica, self.steps = replica, steps
        self.calls = self.add_weight(
            shape=(),
            initializer="zeros",
            trainable=False,
            dtype="int64",
            aggregation="only_first_replica",
            name="calls",
        )

    def call(self, x, training=False):
        if not training:
            return x
        here = tf.distribute.get_replica_context().replica_id_in_sync_group
        hit = tf.logical_and(
            self.calls < self.steps, True if self.replica is None else tf.equal(here, self.replica)
        )
        self.calls.assign_add(1)
        return x * tf.cast(tf.where(hit, float("inf"), 1.0), x.dtype)


def _fp16_trainer(overflow, **config):
    cfg = h.config(mixed_precision="fp16", steps_per_fetch=1, **config)
    data = h.mnist_data()
    trainer = build_trainer(
        cfg,
        data,
        model_fn=h.mlp_fn(extra_layers=lambda: [overflow()]),
        optimizer_fn=h.sgd,
        task=h.task(),
        strategy=prepare_runtime(cfg),
    )
    fn = input_pipeline.train_dataset_fn(
        data.train, global_batch_size=cfg.global_batch_size, seed=cfg.seed
    )
    return trainer, iter(trainer.strategy.distribute_datasets_from_function(fn))


def test_an_overflow_on_one_replica_makes_every_replica_skip_the_step():
    trainer, iterator = _fp16_trainer(
        lambda: Overflow(replica=1), strategy="mirrored", num_cpu_devices=2
    )
    before = [v.numpy() for v in trainer.model.trainable_variables]
    scale = float(trainer.optimizer.dynamic_scale.numpy())
    trainer.run_train(iterator, 3)
    for start, variable in zip(before, trainer.model.trainable_variables):
        on_replicas = [v.numpy() for v in trainer.strategy.experimental_local_results(variable)]
        assert all(np.isfinite(r).all() for r in on_replicas)
        for r in on_replicas:  # skipped on both: unchanged and equal
            np.testing.assert_array_equal(r, start)
    assert (
        float(trainer.optimizer.dynamic_scale.numpy()) == scale / 8
    )  # halved once per skipped step


def test_a_skipped_step_still_advances_the_lr_schedule():
    trainer, iterator = _fp16_trainer(lambda: Overflow(steps=1), lr_schedule="cosine", epochs=1)
    trainer.run_train(iterator, 4)
    step = int(trainer.step.numpy())
    assert step == 4
    assert int(trainer.optimizer.inner_optimizer.iterations.numpy()) == step  # one counter for both
    assert trainer.current_learning_rate() == float(trainer.learning_rate(step))
