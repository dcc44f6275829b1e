"""benchmarks.device_check on a machine without a GPU: it must say so cleanly, in its report too."""

import json
import subprocess
import sys

import pytest

from benchmarks import device_check


@pytest.mark.cli
def test_device_check_without_a_gpu_reports_no_gpu(tmp_path):
    assert device_check.gpu_names() == []  # the suite's machines have no GPU
    out = tmp_path / "device"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no GPU on this machine; nothing measured" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "no GPU: nothing measured" and report["setup"]["gpus"] == "none"
    assert report["setup"]["tensorflow"].startswith("2.")
    assert "# Device check: no GPU" in (out / "report.md").read_text()


def test_parity_flags_a_difference_beyond_tolerance():
    one = {"test_accuracy": 0.50, "test_loss": 1.0, "weights_fingerprint": 100.0}
    same = {"test_accuracy": 0.51, "test_loss": 1.01, "weights_fingerprint": 100.5}
    assert all(v.startswith("ok") for v in device_check.parity(one, same).values())
    differs = device_check.parity(one, {**same, "weights_fingerprint": 103.0, "test_accuracy": 0.6})
    assert differs["weights_fingerprint"].startswith("DIFFERS") and differs[
        "test_accuracy"
    ].startswith("DIFFERS")
    assert device_check.parity(one, {})["test_loss"] == "missing"
