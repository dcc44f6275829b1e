"""python -m trainers.compare: every numeric final metric's statistics per group of runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trainers import compare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(folder, **metrics):
    folder.mkdir(parents=True)
    result = {
        "test_accuracy": 0.0,
        "train_steps": 100,
        "weights_fingerprint": 12.5,
        "stop_reason": "completed",
        "per_class_accuracy": [0.5, 0.5],
        "config": {"seed": 0},
        **metrics,
    }
    (folder / "result.json").write_text(json.dumps(result))


def test_statistics_per_group_over_series_and_single_runs(tmp_path):
    accuracies, flipped, seconds = [0.5, 0.6, 0.9], [0.1, 0.3, 0.2], [10.0, 20.0, 60.0]
    for i, (acc, flip, wall) in enumerate(
        zip(accuracies, flipped, seconds)
    ):  # a series of 3 repeats
        _run(
            tmp_path / "adam" / f"repeat_{i}",
            test_accuracy=acc,
            test_flip_ud_accuracy=flip,
            wall_seconds=wall,
            examples_per_sec=1000.0 * (i + 1),
        )
    _run(
        tmp_path / "adam" / "previous" / "20260101-000000" / "repeat_0", test_accuracy=0.0
    )  # moved aside: skipped
    _run(
        tmp_path / "sgd", test_accuracy=0.7, wall_seconds=5.0, examples_per_sec=3000.0
    )  # a single run
    out = tmp_path / "report"
    assert compare.main([str(tmp_path / "adam"), str(tmp_path / "sgd"), f"--out={out}"]) == 0
    table = json.loads((out / "compare.json").read_text())
    adam, sgd = table["groups"]["adam"], table["groups"]["sgd"]
    assert len(adam["runs"]) == 3 and len(sgd["runs"]) == 1
    acc = adam["metrics"]["test_accuracy"]
    assert acc["mean"] == pytest.approx(2.0 / 3) and acc["std"] == pytest.approx(
        np.std(accuracies, ddof=1)
    )
    assert (acc["median"], acc["min"], acc["max"], acc["n"]) == (pytest.approx(0.6), 0.5, 0.9, 3)
    assert adam["metrics"]["test_flip_ud_accuracy"]["mean"] == pytest.approx(
        0.2
    )  # not only test accuracy
    assert (
        adam["metrics"]["wall_seconds"]["median"] == 20.0
        and adam["metrics"]["examples_per_sec"]["max"] == 3000.0
    )
    assert sgd["metrics"]["test_accuracy"] == {
        "n": 1,
        "mean": 0.7,
        "std": 0.0,
        "median": 0.7,
        "min": 0.7,
        "max": 0.7,
    }
    assert (
        "train_steps" not in adam["metrics"] and "weights_fingerprint" not in adam["metrics"]
    )  # bookkeeping
    assert table["metrics"][-2:] == ["wall_seconds", "examples_per_sec"]
    text = (out / "compare.md").read_text()
    assert "| adam | 3 | 0.6667 ± 0.2082 |" in text and "### test_flip_ud_accuracy" in text
    assert (out / "compare.png").stat().st_size > 1000


def test_a_sweep_folder_groups_by_variant(tmp_path):
    for variant, acc in (("baseline", 0.8), ("deeper", 0.9)):
        _run(tmp_path / variant / "repeat_0", test_accuracy=acc)
    groups = compare.find_groups([str(tmp_path)])
    assert list(groups) == ["baseline", "deeper"]
    assert (
        compare.compare([str(tmp_path)])["groups"]["deeper"]["metrics"]["test_accuracy"]["mean"]
        == 0.9
    )


@pytest.mark.cli
def test_a_folder_without_results_is_one_line_and_exit_2_and_help_needs_no_tensorflow(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "trainers.compare", str(tmp_path / "empty")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'}: no result.json under it (not a finished run, series or "
        "sweep)"
    ]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trainers.compare", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "RUN_DIR" in proc.stdout and "tensorflow" not in proc.stderr
