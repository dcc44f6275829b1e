"""`train(...)`: build strategy, trainer and controller from a config and run. The Python entry
point.

From a notebook cell:

    from framework import TrainConfig, train, Data, ClassificationTask
    result = train(TrainConfig(epochs=2, model_dir="/tmp/run"), Data(train=(x, y), evals={"test":
    (xt, yt)}),
                   model_fn=lambda: my_keras_model(), optimizer_fn=lambda lr:
                   keras.optimizers.Adam(lr), task=ClassificationTask(10))
"""

import math

import keras
import tensorflow as tf
from absl import logging

from framework import input_pipeline, run_record, strategies
from framework.config import ConfigError, TrainConfig
from framework.controller import Controller, Data, loop_lengths
from framework.input_pipeline import steps_per_epoch
from framework.trainer import Trainer


def prepare_runtime(config: TrainConfig) -> tf.distribute.Strategy:
    """Seeds, determinism and the strategy: what must happen before any model is built."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategies.make_strategy(
        config.strategy,
        num_cpu_devices=config.num_cpu_devices,
        tpu=config.tpu,
        gpu_memory_growth=config.gpu_memory_growth,
    )
    if config.mixed_precision == "fp16" and config.strategy == "tpu":
        raise ConfigError(
            "--mixed_precision=fp16: TPUs compute in bf16, not fp16; use --mixed_precision=bf16"
        )
    replicas = strategy.num_replicas_in_sync
    for name in ("global_batch_size", "eval_batch_size"):
        value = getattr(config, name)
        if value % replicas:
            raise ConfigError(
                f"--{name}={value} is not divisible by the {replicas} replicas of "
                f"--strategy={config.strategy}: use a multiple of {replicas}"
            )
    return strategy


def build_trainer(
    config: TrainConfig,
    data: Data,
    *,
    model_fn,
    optimizer_fn,
    task,
    strategy: tf.distribute.Strategy | None = None,
) -> Trainer:
    strategy = strategy or prepare_runtime(config)
    per_epoch = steps_per_epoch(input_pipeline.num_examples(data.train), config.global_batch_size)
    if per_epoch == 0:
        raise ConfigError(
            f"--global_batch_size={config.global_batch_size} is larger than the "
            f"{input_pipeline.num_examples(data.train)} training examples"
        )
    total = config.train_steps or config.epochs * per_epoch
    return Trainer(
        config=config,
        strategy=strategy,
        model_fn=model_fn,
        optimizer_fn=optimizer_fn,
        task=task,
        total_steps=total,
        steps_per_fetch=steps_per_fetch(config, data, per_epoch, total),
    )


def steps_per_fetch(
    config: TrainConfig,
    data: Data,
    per_epoch: int,
    total: int,
    *,
    max_steps: int = 128,
    max_bytes: int = 16 << 20,
) -> int:
    """Batches per `next(iterator)`: a divisor of every loop length, so no fetch straddles two
    loops.

    Loops end at multiples of steps_per_loop, epoch ends, checkpoints, profile boundaries and the
    last step, all sums of multiples of their gcd; auto picks its largest divisor such that a
    fetch holds at most `max_steps` batches and `max_bytes` of data.
    """
    if data.host_fn is not None:  # host augmentation maps one batch at a time
        return 1
    common = math.gcd(*loop_lengths(config, per_epoch, total).values())
    if config.steps_per_fetch:
        if common % config.steps_per_fetch:
            raise ConfigError(
                f"--steps_per_fetch={config.steps_per_fetch} must divide every loop length "
                f"(gcd of steps_per_loop, steps per epoch {per_epoch}, total steps {total}, "
                f"checkpoint_every, profile_steps = {common}); use 0 for automatic"
            )
        return config.steps_per_fetch
    batch_bytes = input_pipeline.example_nbytes(data.train) * config.global_batch_size
    cap = max(1, min(max_steps, max_bytes // batch_bytes))
    return max(k for k in range(1, cap + 1) if common % k == 0)


def train(
    config: TrainConfig,
    data: Data,
    *,
    model_fn,
    optimizer_fn,
    task,
    hooks=(),
    callbacks=(),
    run_config: dict | None = None,
    strategy=None,
) -> dict:
    """Train, evaluate on data.evals['test'] and return result.json's contents. `hooks(LoopInfo)`
    run after every loop (True pauses the run); `callbacks`: Keras callbacks
    (framework/callbacks.py).

    A `config.model_dir` that holds a run with another configuration (`run_config`, else `config`,
    and the training arrays' shapes) is refused; `config.fresh_start` moves its files aside first
    (framework/run_record.py). The same call again resumes."""
    if logging.get_verbosity() < logging.INFO:  # a notebook: absl defaults to warnings only
        logging.set_verbosity(logging.INFO)
    strategy = strategy or prepare_runtime(config)
    record = {
        **(run_config or config.to_dict()),
        "train_shapes": input_pipeline.example_shapes(data.train),
    }
    run_record.prepare(config.model_dir, record, fresh_start=config.fresh_start, strategy=strategy)
    trainer = build_trainer(
        config, data, model_fn=model_fn, optimizer_fn=optimizer_fn, task=task, strategy=strategy
    )
    controller = Controller(
        trainer, data, config, hooks=hooks, callbacks=callbacks, run_config=run_config
    )
    return controller.run()
