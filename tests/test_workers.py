"""Several real workers on localhost: a SIGTERM that reaches one of them saves and stops all of
them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_processes import ROOT, _env, _latest_step

pytestmark = pytest.mark.cli  # every test here runs trainers in their own processes

ARGS = [
    sys.executable,
    "-m",
    "trainers.mnist",
    "--strategy=multi_worker",
    "--model=mlp",
    "--train_examples=8192",
    "--epochs=2",
    "--global_batch_size=64",
    "--steps_per_loop=8",
    "--checkpoint_every=32",
    "--export=false",
]


def _start_workers(model_dir):
    from framework.launch import tf_configs

    return [
        subprocess.Popen(
            ARGS + [f"--model_dir={model_dir}"],
            cwd=ROOT,
            env={**_env(), "TF_CONFIG": json.dumps(c)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for c in tf_configs(2)
    ]


def test_sigterm_to_one_worker_checkpoints_and_stops_both_then_both_resume(tmp_path):
    workers = _start_workers(tmp_path)
    deadline = time.time() + 180
    while _latest_step(tmp_path) < 32 and time.time() < deadline and workers[0].poll() is None:
        time.sleep(0.05)
    signalled_after = _latest_step(tmp_path)
    assert signalled_after >= 32
    workers[1].send_signal(signal.SIGTERM)  # the chief (worker 0) gets no signal
    outs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [128 + signal.SIGTERM] * 2, (
        outs[0][-1500:] + outs[1][-1500:]
    )
    stopped_at = _latest_step(tmp_path)
    assert stopped_at > signalled_after and stopped_at % 8 == 0  # saved at a loop end
    assert f"stopped by signal {int(signal.SIGTERM)} at step {stopped_at}" in outs[0]
    workers = _start_workers(tmp_path)
    outs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-1500:] + outs[1][-1500:]
    assert f"at step {stopped_at}" in outs[0] and "resumed from" in outs[0]
    assert json.loads((tmp_path / "result.json").read_text())["train_steps"] == 256
    assert not [p for p in os.listdir(tmp_path / "checkpoints") if p.startswith(".scratch")]
