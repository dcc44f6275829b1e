"""A run's input streams, from its Data and TrainConfig: the training stream (arrays or a streamed
source, synthetic data, or the same batches made by the tf.data service's workers) and each
evaluation split's. The controller builds them; framework/input_pipeline.py makes them.
"""

from absl import logging

from framework import data_service, input_pipeline
from framework.config import TrainConfig
from framework.loops import Data


def eval_dataset_fn(data: Data, config: TrainConfig, split: str):
    """(dataset function, batches per pass) of evaluation split `split` ("train": the training set,
    unless an evaluation split of that name was given)."""
    source = data.train if split == "train" and "train" not in data.evals else data.evals[split]
    return input_pipeline.eval_dataset_fn(
        source, global_batch_size=config.eval_batch_size or config.global_batch_size
    )


def train_dataset_fn(
    data: Data, config: TrainConfig, *, start_step: int, stop_step: int, steps_per_fetch: int
):
    """The training stream's dataset function from `start_step` on (`stop_step`: the run's last
    step, where the tf.data service's finite stream ends)."""
    batches = dict(
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        steps_per_fetch=steps_per_fetch,
    )
    if data.synthetic:
        return input_pipeline.synthetic_dataset_fn(data.train, **batches)
    batches.update(start_step=start_step, host_fn=data.host_fn, **data.pipeline)
    if config.data_service:  # the same batches, made by the service's workers (not their order)
        logging.info(
            "training input: tf.data service at %s, steps %d-%d",
            config.data_service,
            start_step + 1,
            stop_step,
        )
        return data_service.train_dataset_fn(
            data.train, config.data_service, stop_step=stop_step, **batches
        )
    return input_pipeline.train_dataset_fn(data.train, **batches)
