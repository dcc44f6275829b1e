"""Real processes: kill -9 and SIGTERM with exact resume, and a 2-worker MultiWorkerMirrored run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

pytestmark = pytest.mark.cli  # every test here runs trainers in their own processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_MLP = [
    sys.executable,
    "-m",
    "trainers.mnist",
    "--model=mlp",
    "--train_examples=4096",
    "--epochs=3",
    "--global_batch_size=16",
    "--steps_per_loop=16",
    "--checkpoint_every=16",
    "--deterministic",
    "--export=false",
    "--lr_schedule=cosine",
    "--dropout=0.1",
]  # 768 steps


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(args, model_dir, **kw):
    return subprocess.run(
        args + [f"--model_dir={model_dir}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def _latest_step(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(path.rsplit("-", 1)[1]) if path else 0


def _start_and_signal(model_dir, sig, after_step):
    """Start a run, send `sig` once a checkpoint at or after `after_step` exists; returns the
    process."""
    proc = subprocess.Popen(
        MNIST_MLP + [f"--model_dir={model_dir}"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while _latest_step(model_dir) < after_step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _final_variables(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return {
        name: tf.train.load_variable(path, name)
        for name, _ in tf.train.list_variables(path)
        if name.startswith(("model_variables", "optimizer", "step"))
    }


def test_kill_9_and_sigterm_then_resume_equals_uninterrupted(tmp_path):
    # The uninterrupted run goes on beside the interrupted ones (--deterministic: same numbers
    # either way).
    full = subprocess.Popen(
        MNIST_MLP + [f"--model_dir={tmp_path / 'full'}"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rng = random.Random()
    run_dir = tmp_path / "interrupted"
    killed_at = 0
    for _ in range(3):  # kill -9 at random points, each restart resuming from the last checkpoint
        code, _ = _start_and_signal(run_dir, signal.SIGKILL, killed_at + rng.randrange(16, 150))
        assert code == -signal.SIGKILL
        assert _latest_step(run_dir) > killed_at
        killed_at = _latest_step(run_dir)
    code, err = _start_and_signal(run_dir, signal.SIGTERM, killed_at + rng.randrange(16, 150))
    assert code == 128 + signal.SIGTERM, err[-2000:]
    assert "run the same command to resume" in err
    finished = _run(MNIST_MLP, run_dir)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "resumed from" in finished.stderr
    _, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err[-2000:]
    a, b = _final_variables(tmp_path / "full"), _final_variables(run_dir)
    assert a.keys() == b.keys() and int(b["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 768
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    result_a = json.loads((tmp_path / "full" / "result.json").read_text())
    result_b = json.loads((run_dir / "result.json").read_text())
    assert result_a["test_accuracy"] == result_b["test_accuracy"]
    history_a = json.loads((tmp_path / "full" / "history.json").read_text())
    history_b = json.loads((run_dir / "history.json").read_text())
    assert history_a["test_accuracy"] == history_b["test_accuracy"] and len(history_b["epoch"]) == 3


def test_two_workers_on_localhost_agree_on_the_weights_and_the_time_budget(tmp_path):
    """One launch of 2 MultiWorkerMirrored workers: the same final weights on both, and one
    train_steps from --train_minutes (each worker times the steps itself, 3588 and 3593 ex/s in one
    run: they must agree on the number of timed chunks, each step being a collective, and on the
    length)."""
    args = [
        sys.executable,
        "-m",
        "framework.launch",
        "--workers=2",
        "--",
        sys.executable,
        "-m",
        "trainers.mnist",
        "--strategy=multi_worker",
        "--model=mlp",
        "--train_examples=4096",
        "--epochs=3",
        "--global_batch_size=64",
        "--train_minutes=0.1",
        f"--model_dir={tmp_path}",
        "--export=false",
    ]
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    fingerprints = {}
    for line in proc.stdout.splitlines():
        if '"weights_fingerprint"' in line:
            worker = line.split("]")[0]
            fingerprints[worker] = float(line.split(":")[1].strip().rstrip(","))
    assert len(fingerprints) == 2 and len(set(fingerprints.values())) == 1, fingerprints
    decisions = {
        line.split("]")[0]: line.split("time budget: ")[1]
        for line in (proc.stdout + proc.stderr).splitlines()
        if "time budget: " in line
    }
    assert len(decisions) == 2 and len(set(decisions.values())) == 1, decisions
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["num_replicas"] == 2 and result["test_accuracy"] > 0.7, result["train_steps"]
    assert not [p for p in os.listdir(tmp_path / "checkpoints") if p.startswith(".scratch")]


def test_a_dead_worker_stops_the_other(tmp_path):
    # Worker 1 gets an unknown flag and exits at once; worker 0 must not wait forever for it.
    script = (
        "import os,sys,json; t=json.loads(os.environ['TF_CONFIG'])['task']['index']; "
        "sys.argv += ['--bogus_flag=1'] if t == 1 else []; "
        "from trainers import cli; cli.main('mnist')"
    )
    args = [
        sys.executable,
        "-m",
        "framework.launch",
        "--workers=2",
        "--grace_seconds=5",
        "--",
        sys.executable,
        "-c",
        script,
        "--strategy=multi_worker",
        "--model=mlp",
        "--train_examples=2048",
        "--epochs=50",
        f"--model_dir={tmp_path}",
    ]
    start = time.time()
    proc = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "stopping the others" in proc.stderr
    assert time.time() - start < 120


def test_worker_killed_mid_run_stops_the_other_and_all_resume(tmp_path):
    """kill -9 one of two workers: the survivor errors out (no hang: the strategy's health check,
    with no collective timeout set); restarting both resumes."""
    from framework.launch import tf_configs

    args = [
        sys.executable,
        "-m",
        "trainers.mnist",
        "--strategy=multi_worker",
        "--model=mlp",
        "--train_examples=4096",
        "--epochs=3",
        "--global_batch_size=16",
        "--steps_per_loop=16",
        "--checkpoint_every=32",
        f"--model_dir={tmp_path}",
        "--export=false",
    ]
    env = {
        **_env(),
        "TFLOOPS_HEALTH_CHECK_SECONDS": "3",
    }  # TF's 30 s default: the survivor waits that long

    def start_workers():
        return [
            subprocess.Popen(
                args,
                cwd=ROOT,
                env={**env, "TF_CONFIG": json.dumps(c)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for c in tf_configs(2)
        ]

    workers = start_workers()
    deadline = time.time() + 120
    while _latest_step(tmp_path) < 64 and time.time() < deadline and workers[0].poll() is None:
        time.sleep(0.05)
    workers[1].kill()
    start = time.time()
    out, _ = workers[0].communicate(timeout=150)
    assert workers[0].returncode != 0, out[-2000:]
    assert (
        time.time() - start < 60
    )  # the health check fails the survivor within a few of its intervals
    killed_at = _latest_step(tmp_path)
    assert killed_at >= 64
    workers = start_workers()
    outs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "resumed from" in outs[0]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["train_steps"] == 768
