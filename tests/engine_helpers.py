"""Small real-data fixtures for the engine tests: MNIST subsets and seeded Keras models."""

import functools
import os

import keras
import numpy as np
import tensorflow as tf

from framework import ClassificationTask, Data, TrainConfig


@functools.lru_cache(maxsize=1)
def mnist_arrays():
    with np.load(os.path.join(os.environ["DATA_DIR"], "mnist.npz"), allow_pickle=False) as f:
        return (
            f["x_train"][..., None],
            f["y_train"].astype(np.int32),
            f["x_test"][..., None],
            f["y_test"].astype(np.int32),
        )


def mnist_data(train=2048, test=512) -> Data:
    x, y, xt, yt = mnist_arrays()
    return Data(train=(x[:train], y[:train]), evals={"test": (xt[:test], yt[:test])})


def mlp_fn(widths=(64, 64), seed=1, extra_layers=list):
    def build():
        layers = [keras.Input((28, 28, 1)), keras.layers.Flatten()]
        for i, w in enumerate(widths):
            layers.append(
                keras.layers.Dense(
                    w,
                    activation="relu",
                    kernel_initializer=keras.initializers.GlorotUniform(seed + i),
                )
            )
        layers += extra_layers()  # a factory: each model gets its own layers
        layers.append(
            keras.layers.Dense(
                10, dtype="float32", kernel_initializer=keras.initializers.GlorotUniform(seed + 99)
            )
        )
        return keras.Sequential(layers)

    return build


def bn_cnn_fn(sync: bool, seed=1):
    def build():
        init = lambda i: keras.initializers.GlorotUniform(seed + i)  # noqa: E731
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(8, 3, strides=2, kernel_initializer=init(0)),
                keras.layers.BatchNormalization(synchronized=sync),
                keras.layers.ReLU(),
                keras.layers.Conv2D(16, 3, strides=2, kernel_initializer=init(1)),
                keras.layers.BatchNormalization(synchronized=sync),
                keras.layers.ReLU(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10, dtype="float32", kernel_initializer=init(2)),
            ]
        )

    return build


def sgd(lr):
    return keras.optimizers.SGD(lr, momentum=0.9)


def adam(lr):
    return keras.optimizers.Adam(lr)


def config(**overrides) -> TrainConfig:
    base = dict(global_batch_size=32, learning_rate=0.05, epochs=1, steps_per_loop=16, export=False)
    base.update(overrides)
    return TrainConfig(**base)


def task():
    return ClassificationTask(10)


def weights(model):
    return [v.numpy() for v in model.weights]


@keras.saving.register_keras_serializable(package="tests")
class PoisonAfter(keras.layers.Layer):
    """Multiplies its input by NaN from the `at`-th training call on: a NaN injected at a chosen
    step."""

    def __init__(self, at, **kwargs):
        super().__init__(**kwargs)
        self.at = at
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
        self.calls.assign_add(1)
        return x * tf.where(self.calls >= self.at, float("nan"), 1.0)
