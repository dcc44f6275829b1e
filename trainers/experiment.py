"""An image-classification experiment: data, model, optimizer and augmentation, run by the engine.

`run_experiment(exp, config)` is what every image trainer (`trainers.mnist`,
`trainers.fashion_mnist`, `trainers.cifar`) calls, from a notebook too. The experiment is split by
concern:

  experiment_config.py  ExperimentConfig: the options, checked when built
  experiment_data.py    load_data: --dataset's source, the subsets, streaming
  experiment_model.py   make_task, model_fn_for, optimizer_fn_for, check_for_data
  experiment.py         run_experiment and the run directory (this module)

This module re-exports their names (`from trainers.experiment import ExperimentConfig, load_data`);
those of experiment_data and experiment_model are imported on first use (PEP 562), so that the
trainers' `--help` does not import TensorFlow.
"""

import dataclasses
import importlib
import os

import numpy as np

import framework
from framework import TrainConfig
from framework import run_record as record
from framework.data.sources import SOURCES
from trainers import tpu_guard
from trainers.experiment_config import (  # noqa: F401  re-exported
    AUGMENT_WHERE,
    EVAL_TRANSFORMS,
    MODEL_OPTIONS,
    ExperimentConfig,
    architecture,
    check_model_options,
    describe_architecture,
    normalize_steps,
)

_LAZY = {
    name: "trainers.experiment_data"
    for name in (
        "load_data",
        "first_images",
        "run_reading_files",
        "skipped_files",
        "permute_pixels",
    )
} | {
    name: "trainers.experiment_model"
    for name in (
        "make_task",
        "eval_transform_of",
        "check_for_data",
        "model_fn_for",
        "check_model_source",
        "optimizer_fn_for",
    )
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'trainers.experiment' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def run_experiment(
    exp: ExperimentConfig,
    config: TrainConfig,
    *,
    hooks=(),
    callbacks=(),
    strategy=None,
    data=None,
    on_trained=None,
) -> dict:
    """Train one model and return result.json's contents (also written under config.model_dir).
    `on_trained(controller)` is called once the model is trained (--repeats' ensembles:
    controller.predict)."""
    from framework.controller import eval_split_names  # lazy: keeps TF out of --help
    from trainers import (  # lazy: keeps TF out of --help
        evaluation,
        experiment_data,
        experiment_model,
    )

    tpu_guard.check(exp, config)  # what a TPU cannot run: refused before the TPU is started
    strategy = strategy or framework.prepare_runtime(config)
    check_run_dir(exp, config)  # a --model_dir of another run fails before the data is read ...
    ds = None
    if data is None:
        data, ds = experiment_data.load_data(exp, config.seed)
        num_classes, image_shape, class_names = ds.num_classes, ds.image_shape, ds.class_names
    else:
        num_classes, image_shape, class_names = (
            int(np.max(data.train[1])) + 1,
            data.train[0].shape[1:],
            None,
        )
    task, policy = experiment_model.make_task(exp, config, num_classes, image_shape)
    experiment_model.check_for_data(exp, image_shape, policy)
    experiment_model.check_model_source(
        exp,
        num_outputs=task.num_outputs,
        seed=config.seed,
        input_shape=policy.output_shape(image_shape) if policy is not None else image_shape,
    )
    # test_a, test_b: the test set's halves
    data = evaluation.with_eval_subsets(data, config.eval_splits)
    # An unknown split: refused here, before anything is built.
    eval_splits = eval_split_names(config, data)
    # ... and a run that can start records itself (or moves the old one aside), before the time
    # budget and the model: a refused command leaves the directory as it was.
    check_run_dir(exp, config, strategy=strategy, write=True)
    if exp.augment_on == "host" and policy is not None:
        data = dataclasses.replace(data, host_fn=evaluation.host_augment_fn(policy, config.seed))
    run_config = {**config.to_dict(), **exp.to_dict()}
    # crop_to: smaller
    model_shape = policy.output_shape(image_shape) if policy is not None else image_shape
    model_fn = experiment_model.model_fn_for(
        exp,
        config,
        task.num_outputs,
        model_shape,
        config.seed,
        train_images=experiment_data.first_images(data.train, exp),
    )
    if exp.train_minutes and not config.train_steps:
        from trainers.time_budget import LADDERS, steps_for_budget  # lazy: keeps TF out of --help

        budget = steps_for_budget(
            exp.train_minutes,
            config=config,
            data=data,
            model_fn=model_fn,
            optimizer_fn=experiment_model.optimizer_fn_for(exp),
            task=task,
            strategy=strategy,
            ladder=LADDERS[exp.model] if exp.budget_ladder else None,
            widths=exp.widths,
            rung_model_fn=lambda widths: experiment_model.model_fn_for(
                dataclasses.replace(exp, widths=tuple(widths)),
                config,
                task.num_outputs,
                model_shape,
                config.seed,
                train_images=experiment_data.first_images(data.train, exp),
                log=False,
            ),
        )
        config = config.replace(train_steps=budget["train_steps"])
        if budget.get("widths") and tuple(budget["widths"]) != tuple(
            exp.widths
        ):  # the ladder's rung
            exp = dataclasses.replace(exp, widths=tuple(budget["widths"]))
            model_fn = experiment_model.model_fn_for(
                exp,
                config,
                task.num_outputs,
                model_shape,
                config.seed,
                train_images=experiment_data.first_images(data.train, exp),
            )
        run_config = {
            **run_config,
            "train_steps": config.train_steps,
            "widths": exp.widths,
            "time_budget": budget,
        }
    trainer = framework.build_trainer(
        config,
        data,
        model_fn=model_fn,
        optimizer_fn=experiment_model.optimizer_fn_for(exp),
        task=task,
        strategy=strategy,
    )
    live_curves = []  # --plot: curves.png rewritten after each history row
    if exp.plot and config.model_dir:
        from trainers import plots  # lazy: keeps TF out of --help

        live_curves.append(
            lambda row: plots.write_curves(config.model_dir, task.metric_names, eval_splits)
        )
    controller = framework.Controller(
        trainer,
        data,
        config,
        hooks=hooks,
        eval_hooks=live_curves,
        callbacks=callbacks,
        run_config=run_config,
    )
    result = experiment_data.run_reading_files(controller, ds)
    if exp.eval_transforms:
        result.update(evaluation.transformed_accuracies(controller, data, exp.eval_transforms))
    if exp.predictions:
        result.update(
            evaluation.write_predictions(
                controller, task, exp.eval_transforms, class_names=class_names, plot=exp.plot
            )
        )
    if exp.eval_transforms or exp.predictions:
        controller.writer.write_json("result.json", result)
    if on_trained is not None:
        on_trained(controller)
    if exp.plot and config.model_dir:  # plots: imported above, for the live curves
        samples = experiment_data.first_images(data.evals["test"], 8)
        if task.eval_transform is not None:  # crop_to: the model takes the centre crop
            samples = np.asarray(task.eval_transform(samples))
        plots.write_plots(
            config.model_dir, trainer.model, samples, metrics=task.metric_names, splits=eval_splits
        )
    return result


def recorded_config(exp: ExperimentConfig, config: TrainConfig) -> dict:
    """The configuration recorded in (and compared with) the run directory: the user's, before any
    time budget picks train_steps (the budget's decision is kept in its own file)."""
    return {**config.to_dict(), **exp.to_dict()}


def check_run_dir(
    exp: ExperimentConfig, config: TrainConfig, *, strategy=None, write=False
) -> None:
    """Refuses a --model_dir that holds a run with another configuration (see framework.run_record);
    with `write`, also starts afresh there (--fresh_start) and records this configuration."""
    # A named dataset is the same wherever its file lives; the user's own files are the folder.
    ignore = () if SOURCES.get(exp.dataset).get("reads_dir") else ("data_dir",)
    ignore += ("predictions", "eval_at_start")  # outputs: they change no training
    # Where the input is made: a resume may use another dispatcher (launch's port).
    ignore += ("data_service",)
    if write:
        record.prepare(
            config.model_dir,
            recorded_config(exp, config),
            fresh_start=config.fresh_start,
            strategy=strategy,
            ignore=ignore,
        )
    elif config.model_dir and not config.fresh_start:
        record.check(config.model_dir, recorded_config(exp, config), ignore=ignore)


def default_model_dir(name: str) -> str:
    return os.path.join("runs", name)
