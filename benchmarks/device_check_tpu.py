"""`python -m benchmarks.device_check --tpu`: the first session on a TPU VM, in one subprocess cell.

Each measurement is a run of the product as a user makes it (`python -m trainers.<name>
--strategy=tpu`, figures read from its result.json), each only while time is left (--minutes, 8 by
default):
  1. the TPU itself: `python -m framework.tpu_env --check` (versions, devices; who holds the TPU);
  2. each trainer's step compiled for the TPU, a few steps: mnist, fashion_mnist (augmentation), and
     cifar's full recipe (GELU kernels, fused BN, lookahead, bf16);
  3. checkpoint and resume: the full recipe stopped half-way and resumed equals one uninterrupted
     run (weights fingerprint, test loss);
  4. the full recipe's examples/s over more steps.
Without a TPU it writes a report saying so and exits 0; `--allow_cpu --smoke` runs every step on the
CPU (--strategy=default) at toy size, to check the script itself.
"""

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchmarks.device_check import cifar_run, no_device_report, parity


def tpu_check(flags_) -> None:
    from benchmarks.report import write_report

    out = flags_.out or os.path.join(os.path.dirname(__file__), "reports", "device", "tpu")
    deadline = time.time() + 60 * flags_.minutes
    if flags_.data_dir:
        os.environ["DATA_DIR"] = flags_.data_dir
    check = subprocess.run(
        [sys.executable, "-m", "framework.tpu_env", "--check"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    setup = {
        "tpu_check": (check.stdout + check.stderr).strip().splitlines()[-12:],
        "command": "python -m benchmarks.device_check --tpu",
    }
    on_tpu = check.returncode == 0
    if not on_tpu and not flags_.allow_cpu:
        return no_device_report(
            out,
            "TPU",
            setup,
            "`python -m framework.tpu_env --check` found no usable TPU (its lines are in the "
            "setup). Run this in a `!python` cell on a TPU VM, in a fresh runtime.",
        )
    placement = ["--strategy=tpu"] if on_tpu else ["--strategy=default"]
    small = ["--train_examples=1024", "--test_examples=256", "--global_batch_size=64"]
    steps = 4 if flags_.smoke else 100
    runs, summary, work = [], {}, tempfile.mkdtemp(prefix="device_check_tpu_")

    def run(name, trainer, extra, estimate=90.0):
        if deadline - time.time() < estimate:
            runs.append({"name": name, "status": "skipped: out of time"})
            return runs[-1]
        flags_run = [*placement, "--eval_every_epochs=0", *extra]
        runs.append(cifar_run(name, flags_run, work, max(deadline - time.time(), 30), trainer))
        print(f"device check: {name}: {runs[-1]['status']}", flush=True)
        return runs[-1]

    # 2. Each trainer's step compiled for the TPU.
    for trainer in ("mnist", "fashion_mnist"):
        run(f"{trainer} step", trainer, [*small, f"--train_steps={steps}"])
    full = ["--recipe=full", "--mixed_precision=bf16", "--train_minutes=0"]
    full += ["--widths=8,16,16", *small] if flags_.smoke else ["--test_examples=2000"]
    every = [f"--checkpoint_every={steps // 2}", f"--steps_per_loop={steps // 2}"]
    whole = run("cifar full", "cifar", [*full, *every, f"--train_steps={2 * steps}"])
    # 3. Checkpoint and resume: the same command stopped by a SIGTERM after its first checkpoint (it
    # saves at that loop's end and exits), then run again to the end in the same model_dir.
    resumed_flags = [*full, *every, f"--train_steps={2 * steps}"]
    if deadline - time.time() > 180:
        flags_run = [*placement, "--eval_every_epochs=0", *resumed_flags]
        _interrupted(os.path.join(work, "cifar resumed"), flags_run, deadline)
    resumed = run("cifar resumed #2", "cifar", resumed_flags)
    summary["resume_equals_uninterrupted"] = {
        k: v for k, v in parity(whole, resumed).items() if k != "test_accuracy"
    }
    summary["bf16_finite_loss"] = (
        whole.get("test_loss") is not None and whole["test_loss"] == (whole["test_loss"])
    )
    # 4. Examples/s of the full recipe over more steps (its first loop compiles).
    speed = run("cifar full ex/s", "cifar", [*full, f"--train_steps={10 * steps}"], estimate=180)
    summary["full_recipe_examples_per_sec"] = speed.get("examples_per_sec")
    write_report(
        out,
        title="Device check: TPU" if on_tpu else "Device check: TPU script on the CPU (not a TPU)",
        summary=summary,
        rows=runs,
        setup=setup,
        columns=["name", "status", "examples_per_sec", "test_loss", "num_replicas", "error"],
    )
    print(f"device check: {len(runs)} runs | report: {out}")


def _interrupted(model_dir: str, flags_run: list[str], deadline: float) -> None:
    """`python -m trainers.cifar` stopped with SIGTERM once it has written a checkpoint."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainers.cifar",
            f"--model_dir={model_dir}",
            "--noexport",
            *flags_run,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while proc.poll() is None and time.time() < deadline:
        if glob.glob(os.path.join(model_dir, "**", "checkpoint"), recursive=True):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.5)
    try:
        proc.wait(timeout=max(deadline - time.time(), 30))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
