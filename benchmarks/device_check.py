"""One call on a GPU machine: does the framework work there, and how fast? Writes
benchmarks/reports/device/.

    python -m benchmarks.device_check [--minutes=8] [--data_dir=DIR] [--peer_command="python airbench94.py"]

Each measurement is a run of the product as a user makes it (`python -m trainers.cifar ...` in its
own process, figures read from its result.json), in this order, each only while time is left:
  1. devices and versions;
  2. "N replicas == 1": the same steps (float32, --deterministic, --sync_batchnorm) on one GPU
     (one_device) and on all GPUs (mirrored): test loss, accuracy and weights fingerprint compared
     within a tolerance;
  3. bf16 and fp16 on one GPU: examples/s and a finite loss;
  4. ours vs Keras `fit` on the CIFAR net (`benchmarks.loop_vs_fit --model=resnet9`, its ratio, one
     run);
  5. ours vs a PyTorch peer, where `--peer_command` names one (e.g. airbench94.py fetched by hand;
     the shared peer script is a CPU port): its wall time and last output lines beside ours;
  6. time to 94% with `--recipe=full --target=test_accuracy>=0.94`, repeated while time allows (mean
     ± std).
Without a GPU it writes a report saying so and exits 0 (the suite runs this path); `--allow_cpu
--smoke` runs every step on the CPU at toy size, to check the script itself before a device is lent.
On several GPUs the parity batch is the recipe's, rounded down to a multiple of the GPU count, and a
mirrored fp16 run checks loss scaling across replicas.

    python -m benchmarks.device_check --tpu        # in a subprocess cell on a TPU VM (Colab v5e-1, Kaggle v5e-8)

writes benchmarks/reports/device/tpu/: each trainer's step compiled for the TPU (mnist,
fashion_mnist, cifar's full recipe: GELU kernels, fused BN, lookahead, bf16), checkpoint and resume
equal to one uninterrupted run (weights fingerprint), and the full recipe's examples/s.
`--strategy=tpu` takes every core, so N replicas against 1 is not compared there. Unverified on a
TPU until its report exists.
"""  # noqa: E501

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Only when run as a program: the benchmarks share absl's flag registry in a test process."""
    flags.DEFINE_float(
        "minutes", 8.0, "Time for the whole check; each step starts only if its estimate fits."
    )
    flags.DEFINE_string("out", "", "Report folder (default benchmarks/reports/device).")
    flags.DEFINE_string(
        "data_dir", "", "Where cifar10_jpeg.npz (or Keras' CIFAR files) lie (default $DATA_DIR)."
    )
    flags.DEFINE_integer("steps", 200, "Training steps of the parity and precision runs.")
    flags.DEFINE_string(
        "peer_command", "", "A PyTorch peer to time on the same machine (its own Python)."
    )
    flags.DEFINE_bool(
        "allow_cpu", False, "Run the GPU steps on the CPU (2 logical devices) to test the script."
    )
    flags.DEFINE_bool(
        "tpu", False, "The TPU check (a TPU VM), reported under benchmarks/reports/device/tpu."
    )
    flags.DEFINE_bool(
        "smoke",
        False,
        "Toy sizes (a narrow net, a few steps): checks the script, measures nothing.",
    )


PARITY_TOLERANCE = {
    "test_accuracy": 0.02,
    "test_loss": 0.05,
    "weights_fingerprint": 0.01,
}  # rel. for the last two


def gpu_names() -> list[str]:
    """GPUs per nvidia-smi (no TensorFlow import: a CUDA-less TensorFlow must not hide them)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return (
        [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0
        else []
    )


def versions() -> dict:
    code = (
        "import json, keras, tensorflow as tf; print(json.dumps({'tensorflow': tf.__version__, "
        "'keras': keras.__version__, 'tf_gpus': [d.name for d in "
        "tf.config.list_physical_devices('GPU')], 'cuda_build': "
        "tf.test.is_built_with_cuda()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"tensorflow": f"import failed: {out.stderr.strip()[-300:]}"}


def divisible_batch(batch: int, replicas: int) -> int:
    """`batch` rounded down to a multiple of `replicas` (3 GPUs: 1024 -> 1023), so every GPU count
    runs."""
    return max(batch - batch % replicas, replicas)


def cifar_run(
    name: str, flags_: list[str], work: str, timeout: float, trainer: str = "cifar"
) -> dict:
    """`python -m trainers.<trainer>` with `flags_`; its result.json plus the command's wall time
    and status. A second call with the same `name` continues in the same model_dir (a resume)."""
    model_dir = os.path.join(work, name.split(" #")[0])
    command = [
        sys.executable,
        "-m",
        f"trainers.{trainer}",
        f"--model_dir={model_dir}",
        "--noexport",
        *flags_,
    ]
    start = time.time()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        status, tail = proc.returncode, proc.stderr.strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        status, tail = "timeout", []
    result_file = os.path.join(model_dir, "result.json")
    result = json.load(open(result_file)) if os.path.exists(result_file) else {}
    return {
        "name": name,
        "status": status,
        "command_seconds": time.time() - start,
        "command": f"python -m trainers.{trainer} " + " ".join(shlex.quote(f) for f in flags_),
        "error": "" if status == 0 else " / ".join(tail),
        **{
            k: result.get(k)
            for k in (
                "test_accuracy",
                "test_loss",
                "examples_per_sec",
                "num_replicas",
                "train_steps",
                "weights_fingerprint",
                "time_to_target_seconds",
                "stop_reason",
                "wall_seconds",
            )
        },
    }


def parity(one: dict, many: dict) -> dict:
    """Whether N replicas trained like 1, within PARITY_TOLERANCE."""
    checks = {}
    for key, tolerance in PARITY_TOLERANCE.items():
        a, b = one.get(key), many.get(key)
        if a is None or b is None:
            checks[key] = "missing"
            continue
        diff = abs(a - b) if key == "test_accuracy" else abs(a - b) / max(abs(a), 1e-12)
        checks[key] = f"{'ok' if diff <= tolerance else 'DIFFERS'} ({diff:.2g} <= {tolerance})"
    return checks


def no_device_report(out: str, device: str, setup: dict, notes: str) -> None:
    """The report of a machine without the device: what was looked at, nothing measured."""
    from benchmarks.report import write_report

    write_report(
        out,
        title=f"Device check: no {device}",
        summary={"verdict": f"no {device}: nothing measured"},
        rows=[],
        columns=["run"],
        setup=setup,
        notes=notes,
    )
    print(f"device check: no {device} usable on this machine; nothing measured | report: {out}")


def main(argv):
    del argv
    if FLAGS.tpu:
        from benchmarks.device_check_tpu import tpu_check

        return tpu_check(FLAGS)
    from benchmarks.report import bar_plot, write_report

    out = FLAGS.out or os.path.join(os.path.dirname(__file__), "reports", "device")
    deadline = time.time() + 60 * FLAGS.minutes
    if FLAGS.data_dir:
        os.environ["DATA_DIR"] = FLAGS.data_dir
    gpus = gpu_names()
    setup = {
        "gpus": gpus or "none",
        **versions(),
        "command": "python -m benchmarks.device_check "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    if not gpus and not FLAGS.allow_cpu:
        return no_device_report(
            out,
            "GPU",
            setup,
            "nvidia-smi lists no GPU on this machine. Run this on a "
            "GPU machine (or `--allow_cpu --smoke` to test the script).",
        )
    on_gpu = bool(gpus)
    size = (
        [
            "--widths=8,16,16",
            "--global_batch_size=64",
            "--train_examples=1024",
            "--test_examples=256",
            "--train_steps=4",
        ]
        if FLAGS.smoke
        else [f"--train_steps={FLAGS.steps}", "--test_examples=2000"]
    )
    base = ["--recipe=full", "--train_minutes=0", "--eval_every_epochs=0", *size]
    replicas = len(gpus) if on_gpu else 2
    many = ["--strategy=mirrored"] + ([] if on_gpu else [f"--num_cpu_devices={replicas}"])
    parity_batch = [f"--global_batch_size={divisible_batch(64 if FLAGS.smoke else 1024, replicas)}"]
    one = ["--strategy=one_device"] if on_gpu else ["--strategy=default"]
    runs, summary = [], {}
    work = tempfile.mkdtemp(prefix="device_check_")

    def left() -> float:
        return deadline - time.time()

    def run(name, extra, estimate=60.0):
        if left() < estimate:
            runs.append({"name": name, "status": "skipped: out of time"})
            return runs[-1]
        runs.append(cifar_run(name, base + extra, work, timeout=max(left(), 30)))
        print(
            f"device check: {name}: {runs[-1]['status']} {runs[-1].get('examples_per_sec') or ''}",
            flush=True,
        )
        return runs[-1]

    # 2. N replicas == 1 (float32, deterministic ops, so that only the replica count differs).
    fp32 = [
        "--mixed_precision=none",
        "--deterministic",
        "--sync_batchnorm",
    ]  # BN over the global batch too
    single = run("1 device fp32", one + fp32 + parity_batch)
    if on_gpu and len(gpus) < 2:
        summary["replicas_parity"] = (
            "one GPU: mirrored on 1 replica equals one_device trivially; not compared"
        )
    else:
        summary["replicas_parity"] = parity(
            single, run(f"mirrored fp32 ({replicas} replicas)", many + fp32 + parity_batch)
        )
        # fp16 across replicas: one loss scale, the same skip decision on every replica.
        result = run(
            f"mirrored fp16 ({replicas} replicas)", many + parity_batch + ["--mixed_precision=fp16"]
        )
        summary["mirrored_fp16_finite_loss"] = (
            result.get("test_loss") is not None and result["test_loss"] == result["test_loss"]
        )
    # 3. bf16 and fp16 on one device.
    for precision in ("bf16", "fp16"):
        result = run(f"1 device {precision}", one + [f"--mixed_precision={precision}"])
        summary[f"{precision}_finite_loss"] = (
            result.get("test_loss") is not None and result["test_loss"] == result["test_loss"]
        )
    # 4. ours vs Keras fit, one run of the existing benchmark.
    if left() > 120:
        fit_out = os.path.join(work, "loop_vs_fit")
        command = [
            sys.executable,
            "-m",
            "benchmarks.loop_vs_fit",
            "--model=resnet9",
            "--repeats=1",
            f"--out={fit_out}",
        ]
        if FLAGS.smoke:
            command += ["--examples=256"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=max(left(), 30))
        report = os.path.join(fit_out, "report.json")
        if os.path.exists(report):
            fit = json.load(open(report))
            summary["ours_vs_fit_default"] = fit.get("speedup_vs_fit_default")
            summary["ours_vs_fit_best"] = fit.get("speedup_vs_fit_best")
        else:
            summary["ours_vs_fit"] = f"failed: {proc.stderr.strip()[-200:]}"
    # 5. A PyTorch peer, where one is given.
    if FLAGS.peer_command and left() > 120:
        start = time.time()
        proc = subprocess.run(
            FLAGS.peer_command, shell=True, capture_output=True, text=True, timeout=max(left(), 30)
        )
        summary["peer"] = {
            "command": FLAGS.peer_command,
            "status": proc.returncode,
            "wall_seconds": time.time() - start,
            "last_lines": proc.stdout.strip().splitlines()[-3:],
        }
    else:
        summary["peer"] = "not run (no --peer_command, or out of time)"
    # 6. Time to 94%, repeated while time allows.
    target = ["--mixed_precision=bf16", "--target=test_accuracy>=0.94", "--eval_every_epochs=1"]
    times = []
    while left() > (max(times) * 1.5 if times else 90):
        result = run(
            f"time to 94% #{len(times) + 1}",
            one + target + (["--train_steps=8"] if FLAGS.smoke else []),
        )
        if result.get("time_to_target_seconds") is None:
            break  # not reached (or failed): another try would not reach it either
        times.append(result["time_to_target_seconds"])
    if times:
        mean = sum(times) / len(times)
        std = (
            (sum((t - mean) ** 2 for t in times) / (len(times) - 1)) ** 0.5
            if len(times) > 1
            else 0.0
        )
        summary["time_to_94_seconds"] = f"{mean:.1f} ± {std:.1f} (n={len(times)})"
    else:
        summary["time_to_94_seconds"] = "not reached in the time given"
    timed = [r for r in runs if r.get("examples_per_sec")]
    write_report(
        out,
        title="Device check: "
        f"{', '.join(gpus) if gpus else 'CPU (script test, not a measurement)'}",
        summary=summary,
        rows=runs,
        setup=setup,
        columns=[
            "name",
            "status",
            "examples_per_sec",
            "test_accuracy",
            "test_loss",
            "num_replicas",
            "train_steps",
            "time_to_target_seconds",
            "command_seconds",
            "error",
        ],
        plots={
            "throughput.png": bar_plot(
                [r["name"] for r in timed],
                [r["examples_per_sec"] for r in timed],
                ylabel="examples/s",
                title="Training throughput per run",
            )
        },
    )
    print(f"device check: {len(runs)} runs | report: {out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
