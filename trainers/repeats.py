"""`--repeats=N` (N fresh models, mean/std and two ensembles) and `--sweep` (a grid of settings).

Each repeat is a new model with its own seed (seed + i: its own initialization and data order),
trained from scratch in `model_dir/repeat_<i>`: never a continuation of the previous one. The
ensembles average the repeats' test logits, or their softmax probabilities.

Each repeat's folder is a run directory (framework/run_record.py): the same command resumes, other
settings are refused before anything trains, and --fresh_start moves all of model_dir aside once.
"""
import dataclasses
import itertools
import json
import os

import keras
import numpy as np
from absl import logging

from framework import ConfigError, TrainConfig, run_record
from framework.outputs import write_json
from trainers.experiment import ExperimentConfig, check_run_dir, load_data, run_experiment


def run_repeats(exp: ExperimentConfig, config: TrainConfig, repeats: int) -> dict:
    if repeats < 1:
        raise ConfigError(f"--repeats={repeats}: must be >= 1")
    if not config.model_dir:
        raise ConfigError("--repeats needs --model_dir (each repeat writes its model there)")
    configs = _repeat_configs(_start_afresh(config), repeats)
    for cfg in configs:  # every repeat's folder before any trains (framework/run_record.py)
        check_run_dir(exp, cfg)
    data, _ = load_data(exp, config.seed)
    x_test, y_test = data.evals["test"]
    accuracies, logits = [], []
    for cfg in configs:
        result = run_experiment(exp, cfg, data=data)
        accuracies.append(result["test_accuracy"])
        logits.append(_test_logits(result["model_file"], x_test))
    logits = np.stack(logits)
    probs = _softmax(logits)
    summary = {
        "repeats": repeats, "test_accuracies": accuracies,
        "test_accuracy_mean": float(np.mean(accuracies)),
        "test_accuracy_std": float(np.std(accuracies, ddof=1)) if repeats > 1 else 0.0,
        "ensemble_logits_accuracy": float(np.mean(np.argmax(logits.mean(0), -1) == y_test)),
        "ensemble_probs_accuracy": float(np.mean(np.argmax(probs.mean(0), -1) == y_test)),
    }
    write_json(os.path.join(config.model_dir, "repeats.json"), summary)
    return summary


def _repeat_configs(config: TrainConfig, repeats: int) -> list[TrainConfig]:
    return [config.replace(seed=config.seed + i, model_dir=os.path.join(config.model_dir, f"repeat_{i}"),
                           export=True) for i in range(repeats)]


def _start_afresh(config: TrainConfig) -> TrainConfig:
    """--fresh_start moves the whole of model_dir aside once (the old repeats or sweep stay together in
    model_dir/previous/<time>/); the runs then start in empty folders."""
    if not config.fresh_start:
        return config
    if run_record.chief_from_env():
        moved = run_record.move_aside(config.model_dir)
        if moved:
            logging.info("--fresh_start: moved the earlier runs' files to %s", moved)
    return config.replace(fresh_start=False)


def _test_logits(model_file: str, x_test: np.ndarray) -> np.ndarray:
    model = keras.models.load_model(model_file, safe_mode=True)
    x = x_test.astype(np.float32) / 255.0
    return np.asarray(model.predict(x, batch_size=512, verbose=0), dtype=np.float64)


def _softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def parse_sweep(text: str) -> dict[str, list[str]]:
    """'learning_rate=0.01,0.1;model=mlp,cnn' -> {'learning_rate': ['0.01', '0.1'], 'model': [...]}."""
    grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, values = part.partition("=")
        if not sep or not values:
            raise ConfigError(f"--sweep={text!r}: expected NAME=V1,V2;NAME=V1,V2 "
                              "e.g. --sweep='learning_rate=0.01,0.1;model=mlp,cnn'")
        grid[name.strip()] = [v.strip() for v in values.split(",")]
    if not grid:
        raise ConfigError(f"--sweep={text!r}: empty")
    return grid


def _override(exp: ExperimentConfig, config: TrainConfig, name: str, value: str):
    for obj, kind in ((exp, "exp"), (config, "config")):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if name in fields:
            current = getattr(obj, name)
            try:
                if isinstance(current, bool):
                    parsed = value.lower() in ("1", "true", "yes")
                elif isinstance(current, tuple):
                    parsed = tuple(int(v) for v in value.split("/")) if value else ()
                else:
                    parsed = type(current)(value)
            except ValueError as err:
                raise ConfigError(f"--sweep: {name}={value!r} is not a valid {type(current).__name__}") from err
            return (dataclasses.replace(exp, **{name: parsed}), config) if kind == "exp" else (
                exp, config.replace(**{name: parsed}))
    raise ConfigError(f"--sweep: {name!r} is not a flag of this trainer")


def run_sweep(exp: ExperimentConfig, config: TrainConfig, sweep: str, repeats: int = 1) -> list[dict]:
    """Every combination of the grid, `repeats` models each; writes sweep.md and sweep.json."""
    if not config.model_dir:
        raise ConfigError("--sweep needs --model_dir")
    grid = parse_sweep(sweep)
    settings = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if any(name in ("model_dir", "fresh_start") for name in grid):
        raise ConfigError(f"--sweep: {' and '.join(n for n in grid if n in ('model_dir', 'fresh_start'))} "
                          "cannot be swept (each cell gets its own folder under --model_dir)")

    def cells(config):
        """(setting, exp, config) of every cell, each in its own folder; overriding validates them."""
        out = []
        for setting in settings:
            e, c = exp, config
            for name, value in setting.items():
                e, c = _override(e, c, name, value)
            tag = "_".join(f"{k}-{v}" for k, v in setting.items()).replace("/", "-")
            out.append((setting, e, c.replace(model_dir=os.path.join(config.model_dir, tag))))
        return out

    cells(config)  # validate every setting before anything is moved, checked or trained
    runs = cells(_start_afresh(config))
    for _, e, c in runs:  # every cell's folders before any trains: a sweep does not stop half-way
        for cfg in _repeat_configs(c, repeats):
            check_run_dir(e, cfg)
    rows = []
    for setting, e, c in runs:
        summary = run_repeats(e, c, repeats)
        rows.append({**setting, "mean": summary["test_accuracy_mean"], "std": summary["test_accuracy_std"],
                     "runs": repeats})
    write_json(os.path.join(config.model_dir, "sweep.json"), rows)
    names = list(grid)
    lines = ["| " + " | ".join(names + ["test accuracy (mean ± std)", "runs"]) + " |",
             "|" + "---|" * (len(names) + 2)]
    for row in rows:
        lines.append("| " + " | ".join([str(row[n]) for n in names] +
                                       [f"{row['mean']:.4f} ± {row['std']:.4f}", str(row["runs"])]) + " |")
    with open(os.path.join(config.model_dir, "sweep.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


def load_summary(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "repeats.json")) as f:
        return json.load(f)
