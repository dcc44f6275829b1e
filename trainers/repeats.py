"""`--repeats=N` (N fresh models, mean/std and two ensembles), `--sweep` (a grid of settings) and
`--variants` (named settings around a baseline, one factor at a time, as the course notebooks do).

Each repeat is a new model with its own seed (seed + i: its own initialization and data order),
trained from scratch in `<folder>/repeat_<i>`: never a continuation of the previous one. The
ensembles average the repeats' test logits (as the evaluation computes them), or their softmax
probabilities. A repeat writes its record, checkpoints, history and result.json; the heavy exports
(the .keras/SavedModel export, per-run predictions: HEAVY_EXPORTS) only when asked for
(--export, --predictions): a series of 50 would otherwise write 50 of each.

A sweep's cell or a variant is a set of options over the command line's, written exactly as flags
(parsed by the same parser: framework/config_flags.py) and resolved like the command line
(trainers/recipes.configs: --optimizer=adam drops the recipe's momentum). Every cell is built and
checked before any trains; each runs `repeats` times in `model_dir/<cell>/repeat_<i>`.

    python -m trainers.mnist --model=mlp --variants='baseline:;deeper:widths=64,64,64,64;\
        sigmoid_inside:activation=sigmoid learning_rate=0.01' --repeats=3 --model_dir=runs/variants

Each folder is a run directory (framework/run_record.py): the same command resumes, other settings
are refused before anything trains, and --fresh_start moves all of model_dir aside once.

From Python: `sweep("mnist", None, variants=..., repeats=3, model_dir=...)`. Every trainer's series
runs through its registered run function and run-directory check (trainers/recipes.py's TRAINERS);
a classifier's (run_experiment) also gives the test-logit ensembles.
"""

import dataclasses
import itertools
import json
import os
import re
from typing import Callable, Sequence

import numpy as np
from absl import flags, logging

from framework import ConfigError, TrainConfig, config_flags, run_record
from framework.outputs import write_json
from trainers import compare, recipes
from trainers.experiment import ExperimentConfig, check_run_dir, load_data, run_experiment

# Per-run exports a series writes only when the user asks for them (fields of either config).
HEAVY_EXPORTS = ("export", "predictions")
NOT_PER_CELL = ("model_dir", "fresh_start")  # each cell gets its own folder under --model_dir
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One setting of a sweep: its folder under model_dir, what it sets (as written), its
    configs."""

    name: str
    written: dict  # {column: text} for the table: the grid's values, or variant and options
    exp: object  # the trainer's config (ExperimentConfig, TripletConfig)
    config: TrainConfig  # config.model_dir is the cell's folder
    exports: dict = dataclasses.field(default_factory=dict)  # HEAVY_EXPORTS the user gave


# ---------------------------------------------------------------- repeats
def run_repeats(
    exp,
    config: TrainConfig,
    repeats: int,
    *,
    exports: dict | None = None,
    trainer: str | None = None,
) -> dict:
    """`repeats` fresh models in config.model_dir/repeat_<i>; returns (and writes as repeats.json)
    the mean/std of every final metric, and for a classifier the test accuracies and the two
    ensembles' accuracies. `exports`: the HEAVY_EXPORTS to write per repeat, e.g. {"export": True}
    (default: none). `trainer`: the registered trainer whose run function trains each (default:
    run_experiment, for an ExperimentConfig)."""
    if not config.model_dir:
        raise ConfigError("--repeats needs --model_dir (each repeat writes its model there)")
    cell = Cell("", {}, exp, config, exports=dict(exports or {}))
    return run_cells(config.model_dir, [cell], repeats, **_trainer_run(trainer))[0]


def _trainer_run(trainer: str | None) -> dict:
    """run_cells' `run` and `check` for a registered trainer (None: the image classifier's)."""
    if trainer is None:
        return dict(run=run_experiment, check=check_run_dir)
    entry = recipes.trainer_entry(trainer)
    return dict(run=entry.fn, check=entry.check_run_dir)


def exports_given(options: dict) -> dict:
    """The HEAVY_EXPORTS among the options a user gave (the rest stay off in a series)."""
    return {k: v for k, v in options.items() if k in HEAVY_EXPORTS}


def run_cells(
    model_dir: str,
    cells: Sequence[Cell],
    repeats: int = 1,
    *,
    run: Callable = run_experiment,
    check: Callable | None = check_run_dir,
) -> list[dict]:
    """Every cell `repeats` times (cell.config.model_dir/repeat_<i>, seeds seed..seed+N-1), after
    checking every repeat's folder (`check(exp, config)` raises); --fresh_start on any cell first
    moves the whole of model_dir aside once. Writes and returns each cell's summary (repeats.json).

    `run(exp, config) -> result dict` trains one model: a trainer's registered run function
    (run_experiment also gives the test logits for the ensembles)."""
    if repeats < 1:
        raise ConfigError(f"--repeats={repeats}: must be >= 1")
    if any(cell.config.fresh_start for cell in cells):
        _move_aside(model_dir)
        cells = [
            dataclasses.replace(cell, config=cell.config.replace(fresh_start=False))
            for cell in cells
        ]
    series = [(cell, _repeat_configs(cell, repeats)) for cell in cells]
    if check is not None:
        for _, runs in series:  # every folder before any trains: a sweep does not stop half-way
            for exp, config in runs:
                check(exp, config)
    summaries = []
    for cell, runs in series:
        summary = (
            _classifier_series(runs)
            if run is run_experiment
            else series_summary([run(e, c) for e, c in runs])
        )
        write_json(os.path.join(cell.config.model_dir, "repeats.json"), summary)
        summaries.append(summary)
    return summaries


def _repeat_configs(cell: Cell, repeats: int) -> list[tuple]:
    """(exp, config) of each repeat: its seed and folder, the heavy exports off unless given."""
    exp, config = cell.exp, cell.config
    for name in HEAVY_EXPORTS:
        value = cell.exports.get(name, False)
        if name in _field_names(exp):
            exp = dataclasses.replace(exp, **{name: value})
        elif name in _field_names(config):
            config = config.replace(**{name: value})
    return [
        (
            exp,
            config.replace(
                seed=config.seed + i, model_dir=os.path.join(config.model_dir, f"repeat_{i}")
            ),
        )
        for i in range(repeats)
    ]


def _field_names(obj) -> set:
    return {f.name for f in dataclasses.fields(obj)}


def _move_aside(model_dir: str) -> None:
    """--fresh_start moves the whole of model_dir aside once (the old repeats or sweep stay together
    in model_dir/previous/<time>/); the runs then start in empty folders."""
    if run_record.chief_from_env():
        moved = run_record.move_aside(model_dir)
        if moved:
            logging.info("--fresh_start: moved the earlier runs' files to %s", moved)


def _classifier_series(runs) -> dict:
    """run_experiment on each (exp, config), on one copy of the data, with the test-logit
    ensembles."""
    exp, config = runs[0]
    data, _ = load_data(exp, config.seed)
    results, predictions = [], []
    for (
        exp,
        config,
    ) in runs:  # the test logits as the evaluation computes them (TTA included), any strategy
        results.append(
            run_experiment(
                exp,
                config,
                data=data,
                on_trained=lambda controller: predictions.append(controller.predict("test")),
            )
        )
    summary = series_summary(results)
    logits = np.stack([p["logits"].astype(np.float64) for p in predictions])
    summary.update(ensemble_metrics(exp.task, logits, predictions[0]["labels"]))
    return summary


def ensemble_metrics(task: str, outputs: np.ndarray, labels: np.ndarray) -> dict:
    """The repeats' test outputs [repeats, examples, outputs] combined, by --task: the accuracy of
    the mean logit and of the mean probability (softmax or sigmoid), or for regression the MAE of
    the mean output."""
    if task == "regression":
        return {"ensemble_mae": float(np.mean(np.abs(outputs.mean(0)[:, 0] - labels)))}
    if task == "binary":
        truth = labels > 0.5
        return {
            "ensemble_logits_accuracy": float(np.mean((outputs.mean(0)[:, 0] > 0) == truth)),
            "ensemble_probs_accuracy": float(
                np.mean((_sigmoid(outputs).mean(0)[:, 0] > 0.5) == truth)
            ),
        }
    return {
        "ensemble_logits_accuracy": float(np.mean(np.argmax(outputs.mean(0), -1) == labels)),
        "ensemble_probs_accuracy": float(
            np.mean(np.argmax(_softmax(outputs).mean(0), -1) == labels)
        ),
    }


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def series_summary(results: Sequence[dict]) -> dict:
    """The repeats' test accuracies with their mean and std (ddof=1), and every final metric's
    statistics (trainers/compare.py's): what repeats.json holds."""
    summary = {"repeats": len(results)}
    if all("test_accuracy" in r for r in results):
        accuracies = [r["test_accuracy"] for r in results]
        stats = compare.statistics(accuracies)
        summary.update(
            test_accuracies=accuracies,
            test_accuracy_mean=stats["mean"],
            test_accuracy_std=stats["std"],
        )
    values: dict[str, list] = {}
    for result in results:
        for name, value in compare.final_metrics(result).items():
            values.setdefault(name, []).append(value)
    summary["metrics"] = {name: compare.statistics(v) for name, v in values.items()}
    return summary


def _softmax(logits):
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


# ---------------------------------------------------------------- sweeps and variants
def parse_sweep(text: str) -> dict[str, list[str]]:
    """'learning_rate=0.01,0.1;model=mlp,cnn' -> {'learning_rate': ['0.01', '0.1'], 'model':
    [...]}."""
    grid = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, values = part.partition("=")
        if not sep or not values:
            raise ConfigError(
                f"--sweep={text!r}: expected NAME=V1,V2;NAME=V1,V2 "
                "e.g. --sweep='learning_rate=0.01,0.1;model=mlp,cnn'"
            )
        grid[name.strip().removeprefix("--")] = [v.strip() for v in values.split(",")]
    if not grid:
        raise ConfigError(f"--sweep={text!r}: empty")
    return grid


def parse_variants(text: str) -> dict[str, list[str]]:
    """'baseline:;wide:widths=256 learning_rate=0.01' -> {'baseline': [], 'wide': ['widths=256',
    ...]}: each variant's options, separated by spaces, each written as its flag (--name=value, the
    -- optional)."""
    variants = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, options = part.partition(":")
        name = name.strip()
        if not VARIANT_NAME.match(name) or name == run_record.PREVIOUS_DIR:
            raise ConfigError(
                f"--variants: {name!r} is not a variant name (letters, digits, _ . + -; not "
                f"'{run_record.PREVIOUS_DIR}'): write NAME:OPTION=VALUE OPTION=VALUE;NAME:... e.g. "
                "--variants='baseline:;wide:widths=256'"
            )
        if name in variants:
            raise ConfigError(f"--variants: {name!r} is given twice")
        variants[name] = options.split()
    if not variants:
        raise ConfigError(f"--variants={text!r}: empty")
    return variants


def parse_options(tokens: Sequence[str], config_classes: Sequence, *, where: str) -> dict:
    """{option: value} of `tokens` ('widths=64,64', '--notta'), parsed as the command line parses
    its flags (framework/config_flags.py: the same types, lists and checks); a bad one is a
    ConfigError."""
    parser = flags.FlagValues()
    for cls in config_classes:
        config_flags.define_flags(cls, flag_values=parser)
    argv = [f"--{token.removeprefix('--')}" for token in tokens]
    try:
        parser(["options", *argv])
        values = {}
        for cls in config_classes:
            values.update(config_flags.flag_dict(cls, flag_values=parser, given_only=True))
    except (flags.Error, ConfigError) as err:
        raise ConfigError(f"{where}: {err}") from err
    fixed = [name for name in values if name in NOT_PER_CELL]
    if fixed:
        raise ConfigError(
            f"{where}: {' and '.join(fixed)} cannot be set per cell "
            "(each cell gets its own folder under --model_dir)"
        )
    return values


def sweep_cells(
    model_dir: str,
    *,
    build: Callable,
    config_classes: Sequence,
    grid: str = "",
    variants: str = "",
    given: dict | None = None,
) -> list[Cell]:
    """The cells of a grid (`grid`: --sweep) or of named variants (`variants`), each built by
    `build(options) -> (exp, config)` from its parsed options and put in model_dir/<cell>. Every
    cell is parsed and built (so validated) here, before anything trains. `given`: the user's other
    options (for the heavy exports they asked for)."""
    if not model_dir:
        raise ConfigError("--sweep and --variants need --model_dir")
    if grid and variants:
        raise ConfigError("--sweep and --variants: give one of them (a grid, or named variants)")
    if variants:
        settings = [
            (
                name,
                {"variant": name, "options": " ".join(tokens)},
                tokens,
                f"--variants: variant {name!r}",
            )
            for name, tokens in parse_variants(variants).items()
        ]
    else:
        table = parse_sweep(grid)
        fixed = [name for name in table if name in NOT_PER_CELL]
        if fixed:
            raise ConfigError(
                f"--sweep: {' and '.join(fixed)} cannot be swept (each cell gets its own folder "
                "under --model_dir)"
            )
        settings = []
        for values in itertools.product(*table.values()):
            written = dict(zip(table, values))
            tag = "_".join(f"{k}-{v}" for k, v in written.items()).replace("/", "-")
            settings.append(
                (tag, written, [f"{k}={v}" for k, v in written.items()], f"--sweep: {tag}")
            )
    cells = []
    for name, written, tokens, where in settings:
        options = parse_options(tokens, config_classes, where=where)
        try:
            exp, config = build(options)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err
        cells.append(
            Cell(
                name,
                written,
                exp,
                config.replace(model_dir=os.path.join(model_dir, name)),
                exports=exports_given({**(given or {}), **options}),
            )
        )
    return cells


def sweep(
    trainer: str,
    recipe: str | None = "auto",
    *,
    grid: str = "",
    variants: str = "",
    repeats: int = 1,
    smoke: bool = False,
    **options,
) -> list[dict]:
    """`python -m trainers.<trainer> --recipe=<recipe> --sweep=<grid> | --variants=<variants>
    --repeats=N --<option>=<value>...`: each cell's configs are `recipes.configs(trainer, recipe,
    **options, **cell's options)`. Writes sweep.md, sweep.json and compare.md/json/png in
    model_dir."""
    cells = recipe_cells(trainer, recipe, grid=grid, variants=variants, smoke=smoke, **options)
    model_dir = os.path.dirname(cells[0].config.model_dir)
    metric = recipes.trainer_entry(trainer).metric
    return run_sweep_cells(model_dir, cells, repeats, metric=metric, **_trainer_run(trainer))


def recipe_cells(
    trainer: str,
    recipe: str | None = "auto",
    *,
    grid: str = "",
    variants: str = "",
    smoke: bool = False,
    **options,
) -> list[Cell]:
    """The cells of `sweep` (each cell's configs: recipes.configs(trainer, recipe, **options,
    **cell's options)), all built and so validated; nothing is written."""
    # The options alone must be valid.
    _, config = recipes.configs(trainer, recipe, smoke=smoke, **options)
    return sweep_cells(
        config.model_dir,
        grid=grid,
        variants=variants,
        given=options,
        config_classes=(recipes.config_class(trainer), TrainConfig),
        build=lambda cell: recipes.configs(trainer, recipe, smoke=smoke, **{**options, **cell}),
    )


def run_sweep(
    exp: ExperimentConfig,
    config: TrainConfig,
    sweep: str = "",
    repeats: int = 1,
    *,
    variants: str = "",
) -> list[dict]:
    """The sweep over built configs (a notebook's `exp, config`): each cell's options replace their
    fields (no recipe to drop values from: see `sweep` for that). Writes the same tables."""

    def build(options):
        own = {k: v for k, v in options.items() if k in _field_names(exp)}
        return dataclasses.replace(exp, **own), config.replace(
            **{k: v for k, v in options.items() if k not in own}
        )

    cells = sweep_cells(
        config.model_dir,
        grid=sweep,
        variants=variants,
        build=build,
        config_classes=(type(exp), TrainConfig),
    )
    return run_sweep_cells(config.model_dir, cells, repeats)


def run_sweep_cells(
    model_dir: str,
    cells: Sequence[Cell],
    repeats: int = 1,
    *,
    run: Callable = run_experiment,
    check: Callable | None = check_run_dir,
    metric: str = "test_accuracy",
) -> list[dict]:
    """run_cells, then the sweep's tables in model_dir: sweep.md and sweep.json (a row per cell:
    what it sets, `metric`'s mean and std over its repeats) and compare.md/json/png (every final
    metric)."""
    summaries = run_cells(model_dir, cells, repeats, run=run, check=check)
    rows = []
    for cell, summary in zip(cells, summaries):
        stats = summary["metrics"].get(metric) or {"mean": float("nan"), "std": float("nan")}
        rows.append({**cell.written, "mean": stats["mean"], "std": stats["std"], "runs": repeats})
    write_json(os.path.join(model_dir, "sweep.json"), rows)
    names = list(cells[0].written)
    lines = [
        "| " + " | ".join(names + [f"{metric.replace('_', ' ')} (mean ± std)", "runs"]) + " |",
        "|" + "---|" * (len(names) + 2),
    ]
    for row in rows:
        lines.append(
            "| "
            + " | ".join(
                [str(row[n]) for n in names]
                + [f"{row['mean']:.4f} ± {row['std']:.4f}", str(row["runs"])]
            )
            + " |"
        )
    with open(os.path.join(model_dir, "sweep.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    compare.write([cell.config.model_dir for cell in cells], model_dir)
    print("\n".join(lines))
    print(
        f"every final metric: {os.path.join(model_dir, 'compare.md')} (and compare.json, "
        "compare.png)"
    )
    return rows


def load_summary(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "repeats.json")) as f:
        return json.load(f)
