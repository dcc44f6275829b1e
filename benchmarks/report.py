"""Benchmark reports: report.md (a table a person reads first, then the setup), report.json, PNG
plots.

Every report says what made it (`provenance()`): the commit, "dirty" when the working tree had
changes outside benchmarks/reports/ (a figure from uncommitted code cannot be reproduced from the
commit alone), the CPU model and the date. `python -m benchmarks.regenerate` remakes them all.
"""

import datetime
import os
import platform
import subprocess

import numpy as np

from framework.outputs import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def provenance() -> dict:
    """{"commit", "dirty", "cpu", "date"} of this run; "unknown" where git or lscpu are missing."""

    def run(*args):
        try:
            proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = (run("git", "rev-parse", "--short", "HEAD") or "unknown").strip()
    # Reports written earlier in the same `make benchmarks` are not changes to the code measured.
    status = run("git", "status", "--porcelain", "--", ".", ":(exclude)benchmarks/reports")
    return {
        "commit": commit,
        "dirty": bool(status.strip()) if status is not None else "unknown",
        "cpu": _cpu_model(run("lscpu")),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def provenance_line(stamp: dict) -> str:
    dirty = " (dirty: uncommitted changes)" if stamp["dirty"] is True else ""
    return f"Made from commit {stamp['commit']}{dirty} on {stamp['date']}, CPU: {stamp['cpu']}."


def _cpu_model(lscpu: str | None) -> str:
    """lscpu's model name and the bf16 support that decides our speed ("AMD EPYC" alone names two
    kinds of machine here: an AVX2-only one and one with AVX512_BF16)."""
    name = platform.processor() or "unknown"
    for text, key in ((lscpu, "Model name:"), (_read("/proc/cpuinfo"), "model name")):
        found = [
            line.split(":", 1)[1].strip()
            for line in (text or "").splitlines()
            if line.strip().startswith(key)
        ]
        if found:
            name = found[0]
            break
    flags = set((_read("/proc/cpuinfo") or "").split())
    isa = next(
        (
            label
            for flag, label in (
                ("amx_bf16", "AMX + AVX512_BF16"),
                ("avx512_bf16", "AVX512_BF16, no AMX"),
                ("avx2", "AVX2, no bf16"),
            )
            if flag in flags
        ),
        None,
    )
    return f"{name} ({isa})" if isa else name


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def machine_setup() -> dict:
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = []
    if gpus:
        try:
            gpu_names = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.split("\n")
        except OSError:
            gpu_names = [g.name for g in gpus]
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
        "gpus": [g for g in gpu_names if g] or "none",
    }


def mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) if len(values) > 1 else 0.0)


def write_report(
    out_dir: str,
    *,
    title: str,
    summary: dict,
    rows: list[dict],
    columns: list[str],
    setup: dict,
    notes: str = "",
    plots: dict | None = None,
) -> None:
    """`rows` become the table; `summary` the headline figures; both go to report.json too."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = provenance()
    write_json(
        os.path.join(out_dir, "report.json"),
        {**summary, "rows": rows, "setup": setup, "provenance": stamp},
    )
    lines = [f"# {title}", "", provenance_line(stamp), ""]
    if notes:
        lines += [notes, ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    lines += ["", "## Summary", ""] + [f"- {k}: {_cell(v)}" for k, v in summary.items()]
    lines += ["", "## Setup", ""] + [f"- {k}: {v}" for k, v in setup.items()]
    for name in plots or {}:
        lines += ["", f"![{name}]({name})"]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for name, draw in (plots or {}).items():
        draw(os.path.join(out_dir, name))


def bar_plot(labels, values, *, ylabel, title, errors=None):
    def draw(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(labels)), 3.5))
        ax.bar(labels, values, yerr=errors, color="tab:blue", capsize=4)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return draw


def grouped_bar_plot(labels, series: dict, *, ylabel, title):
    """Bars side by side per label, one colour per series ({name: values}; None draws no bar)."""

    def draw(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 3.8))
        width = 0.8 / max(1, len(series))
        for i, (name, values) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, [np.nan if v is None else v for v in values], width, label=name)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    return draw


def _cell(value):
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
