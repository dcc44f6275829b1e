"""The training engine: a compiled custom loop over tf.distribute strategies.

    from framework import TrainConfig, Data, ClassificationTask, train
"""
from framework.config import ConfigError, TrainConfig
from framework.controller import Controller, Data, LoopInfo, NonFiniteLossError, TrainingInterrupted
from framework.run import build_trainer, prepare_runtime, train
from framework.tasks import ClassificationTask
from framework.trainer import Trainer

__all__ = ["ConfigError", "TrainConfig", "Controller", "Data", "LoopInfo", "NonFiniteLossError",
           "TrainingInterrupted", "build_trainer", "prepare_runtime", "train", "ClassificationTask",
           "Trainer"]
