"""Remake every report under benchmarks/reports/ from the current code: `make benchmarks`, or

    python -m benchmarks.regenerate [--only=loop_vs_fit/mlp,soak] [--smoke --out=DIR]

Each report is made by its own benchmark in its own process (a fresh TensorFlow runtime, nothing
left warm by the one before), one after the other: timings on a shared machine are only worth
something when nothing else runs. On the 2-core CPU of these reports, roughly 25 minutes in all:
soak 10, input_vs_step/cifar about 5 (six short trainings of the fast recipe), loop_vs_fit about 2-3
per model (our loop and four `fit` settings, two epochs each, twice); the streamed input_vs_step
cases (cifar_jpeg, folder, memory: not yet timed at full size) add a few minutes each; step_profile
and vs_peer (issue 14, not yet timed at full size) a few minutes each, more with the PyTorch peer's
venv.

Then the README's figures table is made again from the reports (benchmarks/readme_table.py).
`--smoke` runs each benchmark at test size (seconds, figures meaningless) into --out, which the
tests use to check that every report can still be made and carries its commit.
"""

import os
import subprocess
import sys
import time

from absl import app, flags

from benchmarks import readme_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS_DIR = os.path.join(ROOT, "benchmarks", "reports")

# report folder (under reports/) -> (module, its arguments, the smoke-sized extra arguments)
REPORTS = {
    "loop_vs_fit/mlp": (
        "benchmarks.loop_vs_fit",
        ["--model=mlp"],
        ["--examples=512", "--repeats=1"],
    ),
    "loop_vs_fit/cnn": (
        "benchmarks.loop_vs_fit",
        ["--model=cnn"],
        ["--examples=256", "--repeats=1"],
    ),
    "loop_vs_fit/resnet9": (
        "benchmarks.loop_vs_fit",
        ["--model=resnet9"],
        ["--examples=128", "--repeats=1"],
    ),
    "input_vs_step/cifar": (
        "benchmarks.input_vs_step",
        ["--trainer=cifar"],
        ["--smoke", "--nosweep"],
    ),
    "input_vs_step/cifar_jpeg": (
        "benchmarks.input_vs_step",
        ["--case=cifar_jpeg", "--examples=50000"],
        ["--smoke", "--examples=512"],
    ),
    "input_vs_step/folder": (
        "benchmarks.input_vs_step",
        ["--case=folder", "--examples=10000"],
        ["--smoke", "--examples=384", "--nosweep"],
    ),
    "input_vs_step/folder_384to160": (
        "benchmarks.input_vs_step",
        ["--case=folder", "--examples=10000", "--folder_size=384", "--folder_image_size=160"],
        ["--smoke", "--examples=384", "--nosweep"],
    ),
    "input_vs_step/memory": (
        "benchmarks.input_vs_step",
        ["--case=memory", "--memory_gb=3", "--memory_epochs=3"],
        ["--smoke", "--memory_gb=0.03", "--memory_epochs=2"],
    ),
    "soak": ("benchmarks.soak", ["--minutes=10"], ["--minutes=0.02", "--checkpoint_every=50"]),
    # Issue 14: where the step's time goes (ours and the PyTorch peer's, when its venv is there) and
    # the ratio.
    "step_profile/cifar_fast_bf16": (
        "benchmarks.step_profile",
        ["--recipe=fast", "--mixed_precision=bf16", "--onednn_verbose"],
        ["--smoke", "--nopeer"],
    ),
    "step_profile/cifar_fast_none": (
        "benchmarks.step_profile",
        ["--recipe=fast", "--mixed_precision=none", "--onednn_verbose"],
        ["--smoke", "--nopeer"],
    ),
    "step_profile/cifar_full_bf16": (
        "benchmarks.step_profile",
        ["--recipe=full", "--mixed_precision=bf16", "--steps=40", "--onednn_verbose"],
        ["--smoke", "--nopeer"],
    ),
    "vs_peer/fast": ("benchmarks.vs_peer", ["--net=fast", "--precision=both"], ["--smoke"]),
    "vs_peer/full": ("benchmarks.vs_peer", ["--net=full", "--precision=both"], ["--smoke"]),
    "fidelity/fast": ("benchmarks.fidelity", ["--net=fast", "--seeds=3"], ["--smoke"]),
    "fidelity/full": (
        "benchmarks.fidelity",
        ["--net=full", "--seeds=3"],
        ["--smoke"],
    ),  # ~1.8 h on 2 Zen 5 cores
    # Issue 33: each fault injected into MNIST runs, SIGKILL soak included: resumed, refused or
    # lost.
    "faults": ("benchmarks.faults", ["--soak", "--kills=10"], ["--smoke"]),
    # Issue 17: the course notebooks' experiments, one command each.
    "notebook_experiments": (
        "benchmarks.notebook_experiments",
        [],
        ["--smoke", "--only=variants,transfer_stage1,transfer_head"],
    ),
}

flags.DEFINE_list("only", [], f"Reports to make (default: all): {', '.join(REPORTS)}.")
flags.DEFINE_bool(
    "smoke", False, "Test size: a few steps each, into --out (the figures mean nothing)."
)
flags.DEFINE_string(
    "out", "", "Folder for the reports (default benchmarks/reports); needed with --smoke."
)
FLAGS = flags.FLAGS


def command(name: str, out_dir: str, smoke: bool = False) -> list[str]:
    module, args, smoke_args = REPORTS[name]
    return [
        sys.executable,
        "-m",
        module,
        *args,
        *(smoke_args if smoke else []),
        f"--out={os.path.join(out_dir, name)}",
    ]


def unmade_reports() -> list[str]:
    """Report folders under benchmarks/reports/ that no entry of REPORTS makes (stale if any)."""
    found = [
        os.path.relpath(root, REPORTS_DIR)
        for root, _, files in os.walk(REPORTS_DIR)
        if "report.json" in files
    ]
    return sorted(set(found) - set(REPORTS))


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.only) - set(REPORTS))
    if unknown:
        raise app.UsageError(f"--only={','.join(unknown)}: unknown; reports: {', '.join(REPORTS)}")
    if FLAGS.smoke and not FLAGS.out:
        raise app.UsageError(
            "--smoke writes meaningless figures: give --out=DIR, not benchmarks/reports"
        )
    out_dir = FLAGS.out or REPORTS_DIR
    for name in unmade_reports():
        print(
            f"warning: benchmarks/reports/{name} has no generator in benchmarks/regenerate.py: "
            "left as it is",
            file=sys.stderr,
        )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    }
    for name in FLAGS.only or REPORTS:
        args = command(name, out_dir, FLAGS.smoke)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(args[1:])}", flush=True)
        start = time.time()
        if subprocess.run(args, cwd=ROOT, env=env).returncode:
            sys.exit(f"{name}: the benchmark failed (command above)")
        print(
            f"[{time.strftime('%H:%M:%S')}] {name}: done in {(time.time() - start) / 60:.1f} min",
            flush=True,
        )
    if out_dir == REPORTS_DIR:
        changed = readme_table.update()
        print(f"README.md: figures table {'rewritten' if changed else 'already up to date'}")


if __name__ == "__main__":
    app.run(main)
