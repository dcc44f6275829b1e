"""Benchmark reports: report.md (a table a person reads first, then the setup), report.json, PNG plots."""
import os
import platform
import subprocess

import numpy as np

from framework.outputs import write_json


def machine_setup() -> dict:
    import keras
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = []
    if gpus:
        try:
            gpu_names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=10).stdout.split("\n")
        except OSError:
            gpu_names = [g.name for g in gpus]
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "cpu_cores": os.cpu_count(), "machine": platform.machine(),
            "gpus": [g for g in gpu_names if g] or "none"}


def mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) if len(values) > 1 else 0.0)


def write_report(out_dir: str, *, title: str, summary: dict, rows: list[dict], columns: list[str],
                 setup: dict, notes: str = "", plots: dict | None = None) -> None:
    """`rows` become the table; `summary` the headline figures; both go to report.json too."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "report.json"), {**summary, "rows": rows, "setup": setup})
    lines = [f"# {title}", ""]
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


def _cell(value):
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
