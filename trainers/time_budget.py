"""`--train_minutes`: train as many steps as fit in N minutes on this machine, decided before training.

A few steps of the real model and optimizer are timed on one batch, then the run gets a fixed
`train_steps` (never more than `--epochs`), so the LR schedule, resume and the result stay
deterministic. The decision is kept in `model_dir/time_budget.json`: a resumed run reuses it.
"""
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from framework import precision

BUDGET_FILE = "time_budget.json"
_WARMUP_STEPS = 2  # the first steps after tracing run slower (oneDNN primitive caches fill)
_TIMED_STEPS = 5


def steps_for_budget(minutes: float, *, config, model_fn, optimizer_fn, task, example_shape,
                     per_epoch: int) -> dict:
    """{'train_steps', 'examples_per_sec', 'minutes'}: the steps that fit, at most epochs * per_epoch."""
    saved = _read(config.model_dir)
    if saved and saved["minutes"] == minutes and saved["global_batch_size"] == config.global_batch_size:
        logging.info("time budget: reusing %s (%d steps)", BUDGET_FILE, saved["train_steps"])
        return saved
    rate = measure_examples_per_sec(config=config, model_fn=model_fn, optimizer_fn=optimizer_fn, task=task,
                                    example_shape=example_shape)
    fit = int(minutes * 60 * rate / config.global_batch_size)
    steps = max(1, min(fit, config.epochs * per_epoch))
    decision = {"minutes": minutes, "global_batch_size": config.global_batch_size,
                "examples_per_sec": rate, "train_steps": steps, "epochs": steps / per_epoch}
    logging.info("time budget: %.0f ex/s measured; %g minutes fit %d steps (%.2f epochs; --epochs=%d caps "
                 "at %d)", rate, minutes, fit, fit / per_epoch, config.epochs, config.epochs * per_epoch)
    if config.model_dir:
        os.makedirs(config.model_dir, exist_ok=True)
        with open(os.path.join(config.model_dir, BUDGET_FILE), "w") as f:
            json.dump(decision, f, indent=2)
    return decision


def measure_examples_per_sec(*, config, model_fn, optimizer_fn, task, example_shape) -> float:
    """Training examples per second of a throwaway copy of the model (one random uint8 batch)."""
    with precision.dtype_policy(config.mixed_precision):
        model = model_fn()
    optimizer = precision.wrap_optimizer(optimizer_fn(1e-9), config.mixed_precision)  # timing only: the weights hardly move
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (config.global_batch_size, *example_shape), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, task.num_classes, config.global_batch_size))

    @tf.function(jit_compile=config.jit_compile or None)
    def steps(n):
        for i in tf.range(n):
            seed = tf.stack([tf.cast(0, tf.int64), tf.cast(i, tf.int64)]) if task.uses_seed else None
            x, y = task.prepare((images, labels), seed=seed, training=True)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(task.loss(y, task.forward(model, x, training=True)))
            grads = tape.gradient(optimizer.scale_loss(loss), model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    steps(tf.constant(_WARMUP_STEPS)).numpy()  # trace and warm up
    start = time.perf_counter()
    steps(tf.constant(_TIMED_STEPS)).numpy()
    return _TIMED_STEPS * config.global_batch_size / (time.perf_counter() - start)


def _read(model_dir):
    path = os.path.join(model_dir, BUDGET_FILE) if model_dir else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
