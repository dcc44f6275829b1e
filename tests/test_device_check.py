"""benchmarks.device_check on a machine without a GPU: it must say so cleanly, in its report too."""

import json
import subprocess
import sys

import pytest

from benchmarks import device_check


def _device_check(out, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", f"--out={out}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.cli
def test_device_check_without_a_gpu_reports_no_gpu(tmp_path):
    assert device_check.gpu_names() == []  # the suite's machines have no GPU
    out = tmp_path / "device"
    assert "no GPU usable on this machine; nothing measured" in _device_check(out)
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


@pytest.mark.cli
def test_tpu_device_check_without_a_tpu_reports_no_tpu(tmp_path):
    out = tmp_path / "tpu"
    assert "no TPU usable on this machine; nothing measured" in _device_check(out, "--tpu")
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "no TPU: nothing measured"
    assert any("no TPU found on this machine" in line for line in report["setup"]["tpu_check"])


def test_the_parity_batch_divides_by_every_gpu_count():
    assert [device_check.divisible_batch(1024, n) for n in (1, 2, 3, 8)] == [1024, 1024, 1023, 1024]
    assert device_check.divisible_batch(64, 3) == 63
