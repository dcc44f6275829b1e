"""`python -m trainers.compare RUN_DIR...`: any runs side by side, as one table and one chart.

    python -m trainers.compare runs/sweep                   # every variant of a sweep
    python -m trainers.compare runs/adam runs/sgd --out=.   # two series of repeats

Each RUN_DIR may hold a single run, a series of repeats (repeat_<i>/ folders) or a sweep (a folder
per cell or variant, each a series); every result.json under it is found. Runs group by series: the
runs in repeat_<i>/ folders are one group, named after their folder (the variant's name in a sweep);
any other run is a group of one. For each group and every numeric final metric in result.json (the
test accuracy, the --eval_transforms accuracies such as test_flip_ud_accuracy, the loss,
wall_seconds, examples_per_sec, ...) you get n, mean, std (over repeats, ddof=1), median, min and
max, written to --out (default: the RUN_DIR when one is given, else the current folder) as
compare.md, compare.json and compare.png (a bar per group: the mean, with the std as its error bar).

A RUN_DIR without any result.json is one line and exit 2. `--help` imports no TensorFlow.
"""

import argparse
import json
import os
import re
import sys

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot state, no backend to choose

# result.json numbers that describe the run's set-up or bookkeeping, not how well or fast it did.
NOT_METRICS = (
    "best_step",
    "train_steps",
    "num_replicas",
    "trainable_params",
    "non_trainable_params",
    "weights_fingerprint",
    "input_wait_seconds",
    "train_loop_seconds",
)
REPEAT_FOLDER = re.compile(r"repeat_\d+$")
OUTPUTS = ("compare.md", "compare.json", "compare.png")


class CompareError(ValueError):
    """A run folder with nothing to compare (the command line makes it one line, exit 2)."""


def find_groups(run_dirs) -> dict[str, list[str]]:
    """{group label: [result.json paths]} over `run_dirs`, in the order found (see the module doc).
    Runs moved aside by --fresh_start (previous/) are skipped."""
    groups: dict[str, list[str]] = {}
    for run_dir in run_dirs:
        if not os.path.isdir(run_dir):
            raise CompareError(f"{run_dir}: no such folder")
        found = []
        for folder, subfolders, files in os.walk(run_dir):
            subfolders[:] = sorted(s for s in subfolders if s != "previous")
            if "result.json" in files:
                found.append(os.path.join(folder, "result.json"))
        if not found:
            raise CompareError(
                f"{run_dir}: no result.json under it (not a finished run, series or sweep)"
            )
        for path in found:
            group_dir = os.path.dirname(path)
            if REPEAT_FOLDER.match(os.path.basename(group_dir)):
                group_dir = os.path.dirname(group_dir)
            groups.setdefault(_label(group_dir, run_dir, several=len(run_dirs) > 1), []).append(
                path
            )
    return groups


def _label(group_dir: str, run_dir: str, *, several: bool) -> str:
    name = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    inside = os.path.relpath(group_dir, run_dir)
    if inside == ".":
        return name
    return f"{name}/{inside}" if several else inside


def final_metrics(result: dict) -> dict[str, float]:
    """The numeric final values of one result.json (nested values and bookkeeping left out)."""
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_METRICS
    }


def statistics(values) -> dict[str, float]:
    """n, mean, std (ddof=1; 0 for one run), median, min, max of `values`."""
    x = np.asarray(values, dtype=np.float64)
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "median": float(np.median(x)),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def compare(run_dirs) -> dict:
    """{"groups": {label: {"runs": [run folders], "metrics": {metric: statistics}}}, "metrics":
    [...]} over every result.json under `run_dirs`. A metric missing from some runs of a group is
    summarized over the runs that have it."""
    groups, order = {}, []
    for label, paths in find_groups(run_dirs).items():
        per_metric: dict[str, list[float]] = {}
        for path in paths:
            with open(path) as f:
                for name, value in final_metrics(json.load(f)).items():
                    per_metric.setdefault(name, []).append(value)
                    if name not in order:
                        order.append(name)
        groups[label] = {
            "runs": [os.path.dirname(p) for p in paths],
            "metrics": {name: statistics(v) for name, v in per_metric.items()},
        }
    # Quality first, cost last: accuracies and losses as found, then the time and throughput.
    cost = [m for m in ("wall_seconds", "examples_per_sec") if m in order]
    return {"groups": groups, "metrics": [m for m in order if m not in cost] + cost}


def markdown(table: dict) -> str:
    """A summary (mean ± std of every metric, a row per group), then a table per metric."""
    groups, metrics = table["groups"], table["metrics"]
    lines = ["| group | runs | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for label, group in groups.items():
        cells = [_mean_std(group["metrics"].get(m)) for m in metrics]
        lines.append(f"| {label} | {len(group['runs'])} | " + " | ".join(cells) + " |")
    for metric in metrics:
        lines += [
            "",
            f"### {metric}",
            "",
            "| group | n | mean | std | median | min | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, group in groups.items():
            s = group["metrics"].get(metric)
            if s:
                lines.append(
                    f"| {label} | {s['n']} | "
                    + " | ".join(_number(s[k]) for k in ("mean", "std", "median", "min", "max"))
                    + " |"
                )
    return "\n".join(lines) + "\n"


def _mean_std(stats) -> str:
    return (
        ""
        if not stats
        else f"{_number(stats['mean'])} ± {_number(stats['std'], like=stats['mean'])}"
    )


def _number(value: float, like: float | None = None) -> str:
    """4 decimals (accuracies, losses); 1 for large numbers (examples/s), `like` another's scale."""
    return f"{value:,.1f}" if abs(value if like is None else like) >= 100 else f"{value:.4f}"


def bar_chart(table: dict, path: str) -> str:
    """compare.png: one panel per metric, a bar per group (its mean; the error bar is the std)."""
    labels, metrics = list(table["groups"]), table["metrics"]
    cols = min(3, max(len(metrics), 1))
    rows = -(-max(len(metrics), 1) // cols)
    fig = Figure(figsize=(4.2 * cols, 0.5 + 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        stats = [table["groups"][g]["metrics"].get(metric) for g in labels]
        means = [s["mean"] if s else np.nan for s in stats]
        stds = [s["std"] if s else 0.0 for s in stats]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def write(run_dirs, out_dir: str) -> dict:
    """compare.md, compare.json and compare.png for `run_dirs` in `out_dir`; returns the table."""
    table = compare(run_dirs)
    os.makedirs(out_dir, exist_ok=True)
    text = markdown(table)
    with open(os.path.join(out_dir, "compare.md"), "w") as f:
        f.write(text)
    tmp = os.path.join(out_dir, f"compare.json.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(table, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, "compare.json"))
    bar_chart(table, os.path.join(out_dir, "compare.png"))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.compare",
        description="Mean, std, median, min and max of every final metric of any runs (single "
        "runs, repeat series, sweeps), grouped by series; writes compare.md, compare.json "
        "and compare.png.",
    )
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="a run, a series of repeats or a sweep"
    )
    parser.add_argument(
        "--out",
        default="",
        help="where to write (default: the RUN_DIR when one is given, else the current folder)",
    )
    args = parser.parse_args(argv)
    out = args.out or (args.run_dirs[0] if len(args.run_dirs) == 1 else ".")
    try:
        table = write(args.run_dirs, out)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # The summary table; each metric's full table is in the file.
    print(markdown(table).split("\n\n")[0])
    print(f"wrote {', '.join(os.path.join(out, name) for name in OUTPUTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
