"""Port fidelity: our airbench against the PyTorch original, whole runs, several seeds each (issue
14.5).

    python -m benchmarks.fidelity [--net=fast|full] [--seeds=3] [--peer_python=PATH] [--out=DIR] [--smoke]

For each seed, one after the other: the peer script (../shared/peers/airbench_torch_cpu.py,
airbench94 in PyTorch, in its own venv: see benchmarks/peer_torch.py) trains and scores the whole
run, then our trainer does the same run as a user types it (`python -m trainers.cifar` with the
airbench settings the peer uses: alternating flip, 2-pixel translate, lookahead every 5 steps,
mirror + translate TTA). Reports each run's TTA test accuracy and training time, and mean +- std of
each side and their difference, in benchmarks/reports/fidelity/<net>/. Without the peer's venv, one
line says how to make it.

  --net=fast  widths 24,96,96, batch 256, 10 epochs (the fast recipe's net)
  --net=full  widths 64,256,256, batch 1024, 10 epochs (airbench94 as published: 16-19 min of
              training per run in bf16 on 2 Zen 5 cores, ~1.8 h for the 6 runs; ~1.5 h per run in
              float32 on AVX2)
"""  # noqa: E501

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmarks import peer_torch
from benchmarks.report import ROOT, bar_plot, machine_setup, mean_std, write_report

NETS = {"fast": ((24, 96, 96), 256), "full": ((64, 256, 256), 1024)}
FLAGS = flags.FLAGS


def define_flags():
    """The command line, defined only when run as a program (the tests import this module beside
    others)."""
    flags.DEFINE_enum(
        "net", "fast", list(NETS), "fast: 24,96,96 at batch 256; full: 64,256,256 at batch 1024."
    )
    flags.DEFINE_integer("seeds", 3, "Runs of each side (seeds 0..N-1), alternating.")
    flags.DEFINE_float("epochs", 10.0, "Epochs of every run.")
    flags.DEFINE_string(
        "peer_python",
        "",
        "The peer venv's python (default $PEER_PYTHON, else .venv-peer/bin/python).",
    )
    flags.DEFINE_string("out", "", "Report folder (default benchmarks/reports/fidelity/<net>).")
    flags.DEFINE_bool(
        "smoke", False, "0.05 epochs on 2 seeds: checks the plumbing, the accuracies mean nothing."
    )


def ours_flags(widths, batch, epochs: float, seed: int) -> list[str]:
    """Our trainer's flags for the peer's run: its recipe's values are airbench's already; these add
    the peer's alternating flip, translate-only batch augmentation and lookahead, and fix the
    length."""
    steps = int(round(epochs * (50000 // batch)))
    return [
        f"--widths={','.join(map(str, widths))}",
        f"--global_batch_size={batch}",
        f"--learning_rate={1.5 * batch / 1024}",
        f"--train_steps={steps}",
        "--train_minutes=0",
        "--alternating_flip",
        "--augment=crop:padding=2",
        "--lookahead_every=5",
        "--tta",
        "--tta_translate=1",
        "--mixed_precision=bf16",
        f"--seed={seed}",
        "--noexport",
        "--nopredictions",
        "--fresh_start",
    ]


def run_ours(widths, batch, epochs, seed, work) -> dict:
    model_dir = os.path.join(work, f"ours_{seed}")
    args = [
        sys.executable,
        "-m",
        "trainers.cifar",
        "--recipe=fast",
        *ours_flags(widths, batch, epochs, seed),
        f"--model_dir={model_dir}",
    ]
    start = time.time()
    proc = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT}
    )
    if proc.returncode:
        raise SystemExit(
            f"our run failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stderr[-2000:]}"
        )
    with open(os.path.join(model_dir, "result.json")) as f:
        result = json.load(f)
    return {
        "accuracy": result["test_accuracy"],
        "train_s": result.get("train_loop_seconds", time.time() - start),
        "command": "python -m trainers.cifar --recipe=fast " + " ".join(args[4:-1]),
    }


def run_peer(python, widths, batch, epochs, seed) -> dict:
    args = [
        python,
        peer_torch.PEER_SCRIPT,
        peer_torch.PEER_DATA,
        f"--widths={','.join(map(str, widths))}",
        f"--batch={batch}",
        f"--epochs={epochs}",
        f"--seed={seed}",
        "--bf16=1",
    ]
    proc = subprocess.run(args, capture_output=True, text=True)
    found = re.search(r"RESULT .*train_s=(\S+) acc=(\S+) tta_acc=(\S+)", proc.stdout)
    if proc.returncode or not found:
        raise SystemExit(
            f"the peer failed (exit {proc.returncode}): {' '.join(args)}\n"
            f"{(proc.stdout + proc.stderr)[-2000:]}"
        )
    return {
        "accuracy": float(found.group(3)),
        "train_s": float(found.group(1)),
        "command": " ".join(
            ["PEER_PYTHON", os.path.relpath(peer_torch.PEER_SCRIPT, ROOT), *args[2:]]
        ),
    }


def main(argv):
    del argv
    python = peer_torch.find_python(FLAGS.peer_python)
    if python is None:
        print(peer_torch.skip_line(FLAGS.peer_python))
        return
    widths, batch = NETS[FLAGS.net]
    epochs, seeds = (0.05, 2) if FLAGS.smoke else (FLAGS.epochs, FLAGS.seeds)
    out = FLAGS.out or os.path.join(ROOT, "benchmarks", "reports", "fidelity", FLAGS.net)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for seed in range(seeds):
            for side, run in (
                ("PyTorch original", lambda: run_peer(python, widths, batch, epochs, seed)),
                ("ours", lambda: run_ours(widths, batch, epochs, seed, work)),
            ):
                found = run()
                rows.append(
                    {
                        "seed": seed,
                        "side": side,
                        "TTA test accuracy": found["accuracy"],
                        "train s": round(found["train_s"]),
                        "command": f"`{found['command']}`",
                    }
                )
                print(
                    f"seed {seed} {side}: {found['accuracy']:.4f} ({found['train_s']:.0f} s)",
                    flush=True,
                )
    accuracy = {
        side: [r["TTA test accuracy"] for r in rows if r["side"] == side]
        for side in ("PyTorch original", "ours")
    }
    (peer_mean, peer_std), (our_mean, our_std) = (
        mean_std(accuracy["PyTorch original"]),
        mean_std(accuracy["ours"]),
    )
    # The difference's standard error from the two samples' spreads (Welch): a gap of several of
    # these is not noise.
    stderr = float(np.sqrt(peer_std**2 / seeds + our_std**2 / seeds))
    summary = {
        "net": FLAGS.net,
        "widths": widths,
        "batch": batch,
        "epochs": epochs,
        "seeds": seeds,
        "peer_mean": peer_mean,
        "peer_std": peer_std,
        "ours_mean": our_mean,
        "ours_std": our_std,
        "ours_minus_peer": our_mean - peer_mean,
        "difference_stderr": stderr,
        "within_0.3_points": abs(our_mean - peer_mean) <= 0.003,
    }
    if FLAGS.smoke:
        summary["smoke"] = True
    notes = (
        ("SMOKE RUN: a fraction of an epoch, the figures mean nothing.\n\n" if FLAGS.smoke else "")
        + f"TTA test accuracy over {seeds} seeds each, on the shared JPEG CIFAR-10: PyTorch "
        f"original {peer_mean:.2%} +- {peer_std:.2%}, ours {our_mean:.2%} +- "
        f"{our_std:.2%}; ours - original = {(our_mean - peer_mean) * 100:+.2f} points "
        f"(standard error of the difference {stderr * 100:.2f})."
    )
    write_report(
        out,
        title=f"Port fidelity: airbench ({FLAGS.net} net) ours against the PyTorch original",
        summary=summary,
        rows=rows,
        columns=["seed", "side", "TTA test accuracy", "train s", "command"],
        setup={
            **machine_setup(),
            "command": f"python -m benchmarks.fidelity --net={FLAGS.net} "
            f"--seeds={seeds}" + (" --smoke" if FLAGS.smoke else ""),
        },
        notes=notes,
        plots={
            "accuracy.png": bar_plot(
                ["PyTorch original", "ours"],
                [peer_mean, our_mean],
                errors=[peer_std, our_std],
                ylabel="TTA test accuracy",
                title=f"{FLAGS.net} net, {seeds} seeds each",
            )
        },
    )
    print(notes.splitlines()[-1])


if __name__ == "__main__":
    define_flags()
    app.run(main)
