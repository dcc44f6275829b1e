"""Soak: a long CPU run with frequent checkpoints and summaries must keep its memory flat.

    python -m benchmarks.soak --minutes=10

Trains the MNIST MLP for --minutes with a checkpoint every --checkpoint_every steps (every few
seconds) and small loops (many summaries and host syncs), sampling the process's resident memory
at every loop. Prints memory at start and end and the growth over the second half, and writes
benchmarks/reports/soak/report.{md,json} and memory.png.
"""

import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from benchmarks.report import machine_setup, write_report  # noqa: E402
from framework import TrainConfig  # noqa: E402
from trainers.experiment import ExperimentConfig, run_experiment  # noqa: E402

flags.DEFINE_float("minutes", 10.0, "How long to train.")
flags.DEFINE_integer("checkpoint_every", 400, "Steps between checkpoints.")
flags.DEFINE_string("out", "", "Report folder (default benchmarks/reports/soak).")
flags.DEFINE_string(
    "model_dir",
    "",
    "Scratch model directory, emptied first (default: a new temporary one, removed at the end).",
)
FLAGS = flags.FLAGS


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(_):
    import shutil
    import tempfile

    model_dir = FLAGS.model_dir or tempfile.mkdtemp(prefix="tfloops_soak_")
    try:
        shutil.rmtree(model_dir, ignore_errors=True)
        soak(model_dir)
    finally:
        if not FLAGS.model_dir:
            shutil.rmtree(model_dir, ignore_errors=True)


def soak(model_dir):
    samples = []
    start = time.time()
    deadline = start + FLAGS.minutes * 60

    def sample(info):
        samples.append((time.time() - start, info.step, rss_mb()))
        return time.time() > deadline  # stop (after a final checkpoint) when time is up

    config = TrainConfig(
        model_dir=model_dir,
        global_batch_size=32,
        epochs=10_000,
        steps_per_loop=100,
        checkpoint_every=FLAGS.checkpoint_every,
        learning_rate=1e-3,
        export=False,
    )
    run_experiment(
        ExperimentConfig(dataset="mnist", model="mlp", optimizer="adam"), config, hooks=[sample]
    )
    warm = samples[len(samples) // 2]
    end = samples[-1]
    checkpoints = end[1] // FLAGS.checkpoint_every
    summary = {
        "minutes": (end[0]) / 60,
        "steps": end[1],
        "checkpoints_written": checkpoints,
        "rss_start_mb": samples[0][2],
        "rss_half_mb": warm[2],
        "rss_end_mb": end[2],
        "growth_second_half_mb": end[2] - warm[2],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }

    def plot(path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([s[0] / 60 for s in samples], [s[2] for s in samples])
        ax.set_xlabel("minutes")
        ax.set_ylabel("resident memory (MB)")
        ax.set_title(f"soak: {end[1]} steps, {checkpoints} checkpoints")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    out = FLAGS.out or os.path.join(os.path.dirname(__file__), "reports", "soak")
    rows = [
        {"minute": round(t / 60, 2), "step": s, "rss MB": m}
        for t, s, m in samples[:: max(1, len(samples) // 12)]
    ]
    write_report(
        out,
        title="Soak: memory over a long run with frequent checkpoints",
        summary=summary,
        rows=rows,
        columns=["minute", "step", "rss MB"],
        setup={
            **machine_setup(),
            "command": f"python -m benchmarks.soak --minutes={FLAGS.minutes} "
            f"--checkpoint_every={FLAGS.checkpoint_every}",
        },
        plots={"memory.png": plot},
    )
    print(
        f"memory: start {summary['rss_start_mb']:.0f} MB, half-way {summary['rss_half_mb']:.0f} "
        f"MB, end {summary['rss_end_mb']:.0f} MB over {end[1]} steps and {checkpoints} "
        f"checkpoints ({summary['minutes']:.1f} min)"
    )


if __name__ == "__main__":
    app.run(main)
