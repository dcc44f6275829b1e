"""Learning-rate schedules by name, each scaled by a variable that reduce-on-plateau lowers."""

import math

import keras
import tensorflow as tf

from framework.config import TrainConfig


@keras.saving.register_keras_serializable(package="tfloops")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from `start` * peak up to `peak` at `warmup_steps`, then linear down to `final` * peak
    at `total_steps` (airbench's triangle); Keras has none."""

    def __init__(self, peak, total_steps, warmup_steps, final=0.0, start=0.0):
        self.peak, self.total_steps, self.warmup_steps = peak, total_steps, warmup_steps
        self.final, self.start = final, start

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.maximum(float(self.warmup_steps), 1.0)
        up = self.peak * (self.start + (1.0 - self.start) * step / warmup)
        frac = (step - warmup) / tf.maximum(float(self.total_steps) - warmup, 1.0)
        down = self.peak * (1.0 + (self.final - 1.0) * tf.minimum(frac, 1.0))
        return tf.where(step < warmup, up, down)

    def get_config(self):
        return dict(
            peak=self.peak,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            final=self.final,
            start=self.start,
        )


@keras.saving.register_keras_serializable(package="tfloops")
class Scaled(keras.optimizers.schedules.LearningRateSchedule):
    """`base(step) * scale`, where `scale` is a variable (reduce-LR-on-plateau); Keras has none."""

    def __init__(self, base, scale: tf.Variable):
        self.base, self.scale = base, scale

    def __call__(self, step):
        base = self.base(step) if callable(self.base) else self.base
        return tf.cast(base, tf.float32) * self.scale

    def get_config(self):
        return dict(
            base=keras.saving.serialize_keras_object(self.base), scale=float(self.scale.numpy())
        )


def build_schedule(config: TrainConfig, total_steps: int):
    """The base schedule (without the plateau scale), a function of the optimizer's step."""
    lr = config.learning_rate
    warmup = max(config.warmup_steps, int(math.ceil(config.warmup_fraction * total_steps)))
    if config.lr_schedule == "constant":
        return lr
    if config.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=config.decay_steps or total_steps, decay_rate=config.decay_rate
        )
    if config.lr_schedule == "cosine":
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=max(total_steps - warmup, 1), warmup_target=lr, warmup_steps=warmup
            )
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1))
    if config.lr_schedule == "onecycle":
        return OneCycle(
            lr,
            total_steps,
            warmup or max(1, total_steps // 4),
            final=config.onecycle_end,
            start=config.onecycle_start,
        )
    raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}")
