"""`--repeats=N` (N fresh models, mean/std and two ensembles) and `--sweep` (a grid of settings).

Each repeat is a new model with its own seed (seed + i: its own initialization and data order),
trained from scratch in `model_dir/repeat_<i>`: never a continuation of the previous one. The
ensembles average the repeats' test logits, or their softmax probabilities.
"""
import dataclasses
import itertools
import json
import os

import keras
import numpy as np

from framework import ConfigError, TrainConfig
from framework.outputs import write_json
from trainers.experiment import ExperimentConfig, load_data, run_experiment


def run_repeats(exp: ExperimentConfig, config: TrainConfig, repeats: int) -> dict:
    if repeats < 1:
        raise ConfigError(f"--repeats={repeats}: must be >= 1")
    if not config.model_dir:
        raise ConfigError("--repeats needs --model_dir (each repeat writes its model there)")
    data, _ = load_data(exp, config.seed)
    x_test, y_test = data.evals["test"]
    accuracies, logits = [], []
    for i in range(repeats):
        cfg = config.replace(seed=config.seed + i, model_dir=os.path.join(config.model_dir, f"repeat_{i}"),
                             export=True)
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
    for setting in settings:  # validate every setting before training any
        e, c = exp, config
        for name, value in setting.items():
            e, c = _override(e, c, name, value)
    rows = []
    for setting in settings:
        e, c = exp, config
        for name, value in setting.items():
            e, c = _override(e, c, name, value)
        tag = "_".join(f"{k}-{v}" for k, v in setting.items()).replace("/", "-")
        summary = run_repeats(e, c.replace(model_dir=os.path.join(config.model_dir, tag)), repeats)
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
