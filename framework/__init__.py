"""The training engine: a compiled custom loop over tf.distribute strategies.

    from framework import TrainConfig, Data, ClassificationTask, train

Names are imported on first use (PEP 562), so `python -m framework.launch` and `--help` of a trainer
do not pay for (or print the start-up lines of) TensorFlow.
"""

import importlib

_EXPORTS = {
    "ConfigError": "framework.config",
    "TrainConfig": "framework.config",
    "Controller": "framework.controller",
    "Data": "framework.controller",
    "LoopInfo": "framework.controller",
    "NonFiniteLossError": "framework.controller",
    "TrainingInterrupted": "framework.controller",
    "build_trainer": "framework.run",
    "prepare_runtime": "framework.run",
    "train": "framework.run",
    "ClassificationTask": "framework.tasks",
    "Trainer": "framework.trainer",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'framework' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
