"""Every benchmark report can still be made from the current code and says which commit made it.

The benchmarks run at smoke size (a few steps: the figures mean nothing); what is checked is that
each module runs, writes a report.json that loads with its figures, a report.md stamped with the
commit, and PNG plots that decode to an image of something.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import regenerate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One report of each benchmark module; soak goes through `python -m benchmarks.regenerate` itself.
SMOKE = ("loop_vs_fit/mlp", "input_vs_step/cifar", "input_vs_step/cifar_jpeg", "soak")


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _head():
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"  # a copy without .git


@pytest.fixture(scope="module")
def smoke_reports(tmp_path_factory, data_dir):
    """Each SMOKE report, the benchmarks started at once (each spends seconds importing TensorFlow)."""
    out = tmp_path_factory.mktemp("reports")
    heads = {_head()}
    commands = {name: regenerate.command(name, str(out), smoke=True) for name in SMOKE if name != "soak"}
    commands["soak"] = [sys.executable, "-m", "benchmarks.regenerate", "--smoke", "--only=soak", f"--out={out}"]
    procs = {name: subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, args in commands.items()}
    outputs = {name: proc.communicate(timeout=400)[0] for name, proc in procs.items()}
    heads.add(_head())  # another commit may land while they run: either is right
    return out, heads, {name: (procs[name].returncode, outputs[name]) for name in SMOKE}


def test_every_report_has_a_generator():
    assert regenerate.unmade_reports() == []  # a report folder nothing remakes would go stale
    for module, _, _ in regenerate.REPORTS.values():
        assert os.path.exists(os.path.join(ROOT, *module.split(".")) + ".py"), module


@pytest.mark.xdist_group("benchmark_smoke")  # one worker runs the benchmarks once (make test runs 2 workers)
@pytest.mark.parametrize("name", SMOKE)
def test_smoke_report_carries_the_commit_and_parses(name, smoke_reports):
    out, heads, runs = smoke_reports
    returncode, output = runs[name]
    assert returncode == 0, output[-3000:]
    folder = out / name
    report = json.loads((folder / "report.json").read_text())
    stamp = report["provenance"]
    assert stamp["commit"] in heads and isinstance(stamp["dirty"], bool), stamp
    assert stamp["cpu"] not in ("", "unknown") and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC$", stamp["date"])
    assert report["rows"] and report["setup"]["tensorflow"] == tf.__version__
    markdown = (folder / "report.md").read_text()
    assert f"Made from commit {stamp['commit']}" in markdown.splitlines()[2]
    assert "|---|" in markdown  # the table
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert plots
    for plot in plots:
        image = tf.io.decode_png((folder / plot).read_bytes()).numpy()
        assert min(image.shape[:2]) >= 200, (plot, image.shape)
        assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20, plot  # bars, axes, text: not blank
    figures = {"loop_vs_fit/mlp": ("ours_steps_per_sec", "fit_default_steps_per_sec", "fit_best_steps_per_sec"),
               "input_vs_step/cifar": ("input_alone_examples_per_sec", "step_alone_examples_per_sec",
                                       "combined_examples_per_sec"),
               "input_vs_step/cifar_jpeg": ("raw_decode_examples_per_sec", "input_alone_examples_per_sec",
                                            "delivered_to_raw_ratio", "step_alone_examples_per_sec",
                                            "combined_examples_per_sec"),
               "soak": ("steps", "rss_end_mb")}[name]
    for key in figures:
        assert report[key] > 0, (key, report)
    if name == "input_vs_step/cifar":  # the current CIFAR trainer: airbench's net, the CPU's recipe
        from trainers import recipes
        recipe = recipes.pick("cifar", "auto")  # fast on a CPU
        assert (report["model"], report["recipe"], report["smoke"]) == ("airbench", recipe, True)
        assert report["bound"] in ("input", "step") and report["efficiency"] > 0
        assert f"trainers.cifar --recipe={recipe}" in markdown.splitlines()[0]
    if name == "input_vs_step/cifar_jpeg":  # streamed JPEGs: the verdicts and every fix measured
        assert report["bound"] in ("input", "step") and report["engine_verdict"].endswith("-bound")
        settings = [row["setting"] for row in report["rows"]]
        for fix in ("num_parallel_calls=1", "no prefetch", "decoded once, in memory", "on device", "on host",
                    "1 data worker", "2 data workers"):
            assert any(fix in s for s in settings), (fix, settings)
        for row in report["rows"]:
            assert row["input alone ex/s"] > 0 and row["combined ex/s"] > 0 and 0 <= row["input wait"] <= 1, row
