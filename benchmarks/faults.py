"""Faults a long run meets (issue 33), injected into real MNIST runs: the table of what happened.

    python -m benchmarks.faults [--soak] [--kills=10] [--out=DIR] [--smoke]

A reference run trains to the end untouched; a second run of the same command is stopped half-way
(SIGTERM, so it holds checkpoints), copied once per fault, damaged, and resumed with the same
command. Each outcome is one of
  resumed   the command finished, and its final weights equal the reference run's, bit for bit;
  refused   exit 2 with one line (no traceback) that names the file, and no checkpoint moved or
            deleted;
  lost      anything else: other weights, a traceback, a checkpoint gone. The table must show none.
Full disks and permission errors are fake writers in the trainer's own process (`inject`, below):
the failing command must be refused in one line, then the same command, space freed, must resume.

`--soak` adds SIGKILL at --kills random moments of one run (half of them while a checkpoint is being
written), resuming each time with the same command, and the same for 2 localhost workers with one
worker killed; their final weights must equal uninterrupted runs'. Writes
benchmarks/reports/faults/.
"""

import concurrent.futures
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 4096 examples, batch 16, 3 epochs: 768 steps, a checkpoint every 16 (many saves to land a kill
# in).
COMMAND = [
    "--model=mlp",
    "--widths=32",
    "--train_examples=4096",
    "--test_examples=512",
    "--epochs=3",
    "--global_batch_size=16",
    "--steps_per_loop=16",
    "--checkpoint_every=16",
    "--deterministic",
    "--dropout=0.1",
    "--lr_schedule=cosine",
    "--export=false",
]
TOTAL_STEPS = 768
REFUSED, RESUMED, LOST = "refused with one line", "resumed", "lost"


# ---------------------------------------------------------------- the faults
def _newest(model_dir, folder="checkpoints"):
    numbers = sorted(
        int(p.rsplit("-", 1)[1][: -len(".index")])
        for p in glob.glob(os.path.join(model_dir, folder, "ckpt-*.index"))
    )
    return os.path.join(model_dir, folder, f"ckpt-{numbers[-1]}")


def _truncate(prefix):
    for data in glob.glob(prefix + ".data-*"):
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)


def _flip_bytes(prefix):
    for data in glob.glob(prefix + ".data-*"):
        with open(data, "r+b") as f:
            f.seek(os.path.getsize(data) // 2)
            chunk = f.read(16)
            f.seek(os.path.getsize(data) // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _leftovers(d):
    os.makedirs(os.path.join(d, "checkpoints", "ckpt-99999_temp"))
    _write(os.path.join(d, "checkpoints", "ckpt-99999_temp", "part-00000-of-00001.data"), "x" * 99)
    _write(os.path.join(d, "checkpoints", "checkpoint.tmp3f2a"), "model_checkpoint_path: ")


# name -> (what is done to a copy of the half-way run, the injected writer fault or None, extra
# flags)
FAULTS = {
    "newest checkpoint truncated": (lambda d: _truncate(_newest(d)), None, []),
    "newest checkpoint's bytes flipped": (lambda d: _flip_bytes(_newest(d)), None, []),
    "checkpoint index garbage": (
        lambda d: _write(os.path.join(d, "checkpoints", "checkpoint"), "\x00garbage {{"),
        None,
        [],
    ),
    "checkpoint index missing": (
        lambda d: os.remove(os.path.join(d, "checkpoints", "checkpoint")),
        None,
        [],
    ),
    "a save's temp files left by a kill": (_leftovers, None, []),
    "best/ index garbage": (
        lambda d: _write(os.path.join(d, "best", "checkpoint"), "garbage"),
        None,
        [],
    ),
    "history.json cut short": (
        lambda d: _write(os.path.join(d, "history.json"), '{"step": [2'),
        None,
        [],
    ),
    "every checkpoint truncated": (
        lambda d: [_truncate(p[: -len(".index")]) for p in glob.glob(f"{d}/checkpoints/*.index")],
        None,
        [],
    ),
    "best/ checkpoint truncated": (lambda d: _truncate(_newest(d, "best")), None, []),
    "run_config.json garbage": (
        lambda d: _write(os.path.join(d, "run_config.json"), "{"),
        None,
        [],
    ),
    "disk full during a checkpoint": (None, "checkpoint", []),
    "disk full during the .keras export": (None, "export", ["--export=true"]),
    "disk full writing predictions.npz": (None, "predictions", ["--predictions"]),
    "permission denied writing a JSON run file": (None, "json", []),
}
# Faults refused on purpose: the way out is the user's (the message names it), the run is intact.
EXPECT_REFUSED = {
    "every checkpoint truncated",
    "best/ checkpoint truncated",
    "run_config.json garbage",
}


def inject(fault: str, module: str, args: list[str]) -> None:
    """Runs `python -m module args` with a writer that fails the way a full disk (or a permission)
    does, in the middle of writing: the partial file is there when the error comes."""
    import errno
    import runpy

    import keras
    import numpy as np
    import tensorflow as tf

    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fault == "checkpoint":
        real, calls = tf.train.CheckpointManager.save, []

        def save(manager, checkpoint_number=None, **kwargs):
            calls.append(checkpoint_number)
            if len(calls) == 3:  # a save of this session, after two have succeeded
                prefix = os.path.join(manager.directory, f"ckpt-{checkpoint_number}")
                os.makedirs(prefix + "_temp", exist_ok=True)
                _write(prefix + "_temp/part-00000-of-00001.data-00000-of-00001", "x" * 64)
                _write(prefix + ".data-00000-of-00001", "x" * 64)
                raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
            return real(manager, checkpoint_number=checkpoint_number, **kwargs)

        tf.train.CheckpointManager.save = save
    elif fault == "export":

        def save_model(model, path, *a, **k):
            _write(path, "PK half a zip")
            full()

        keras.Model.save = save_model
    elif fault == "predictions":

        def savez(path, **arrays):
            _write(path if path.endswith(".npz") else path + ".npz", "PK half")
            full()

        np.savez_compressed = savez
    elif fault == "json":
        from framework import outputs

        real_dump, count = json.dump, []

        def dump(data, f, **kw):
            count.append(1)
            if len(count) == 3:
                f.write('{"half')
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            return real_dump(data, f, **kw)

        outputs.json = type(json)("json_denied")
        outputs.json.dump = dump
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


# ---------------------------------------------------------------- runs
def _env(extra=None):
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", **(extra or {})}


def _trainer(model_dir, extra=()):
    return [sys.executable, "-m", "trainers.mnist", *COMMAND, *extra, f"--model_dir={model_dir}"]


def _run(args, env=None, timeout=900):
    proc = subprocess.run(
        args, cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr


def _latest_step(model_dir):
    index = os.path.join(model_dir, "checkpoints", "checkpoint")
    try:
        with open(index) as f:
            first = f.readline()
        return int(first.rsplit("-", 1)[1].strip().strip('"'))
    except (OSError, ValueError, IndexError):
        return 0


def _weights(model_dir):
    import tensorflow as tf

    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if path is None:
        return None
    return {
        name: tf.train.load_variable(path, name)
        for name, _ in tf.train.list_variables(path)
        if name.startswith(("model_variables", "optimizer", "step"))
    }


def _same(a, b) -> bool:
    import numpy as np

    return (
        a is not None
        and b is not None
        and a.keys() == b.keys()
        and all(np.array_equal(a[k], b[k]) for k in a)
    )


def _one_line_refusal(code, stderr) -> bool:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return code == 2 and "Traceback" not in stderr and len(errors) == 1


def _checkpoint_files(model_dir):
    return sorted(
        os.path.relpath(p, model_dir)
        for folder in ("checkpoints", "best")
        for p in glob.glob(os.path.join(model_dir, folder, "ckpt-*"))
    )


def _start(model_dir, extra=(), env=None) -> subprocess.Popen:
    """The trainer in the background; its output to a file (a pipe nobody reads would stall it)."""
    log = open(os.path.join(os.path.dirname(model_dir), "log.txt"), "a")  # noqa: SIM115
    return subprocess.Popen(
        _trainer(model_dir, extra), cwd=ROOT, env=_env(env), stdout=log, stderr=log
    )


def _stop_half_way(model_dir, sig=signal.SIGTERM, at_step=TOTAL_STEPS // 2):
    proc = _start(model_dir)
    while _latest_step(model_dir) < at_step and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    return proc.wait(timeout=300)


def fault_table(work, reference, faults) -> list[dict]:
    half = os.path.join(work, "half")
    _stop_half_way(half)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # processes: mostly TF imports
        return list(pool.map(lambda name: _fault_row(work, half, reference, name), faults))


def _fault_row(work, half, reference, name) -> dict:
    """One fault on a copy of the half-way run, then the same command: its row of the table."""
    damage, writer, extra = FAULTS[name]
    model_dir = os.path.join(work, "".join(c if c.isalnum() else "_" for c in name))
    shutil.copytree(half, model_dir)
    if damage:
        damage(model_dir)
    before = _checkpoint_files(model_dir)
    refusal = ""
    if writer:  # the failing command first; then the same command with the disk fixed
        args = [sys.executable, "-m", "benchmarks.faults", "inject", writer, "trainers.mnist"]
        code, _, err = _run(args + COMMAND + extra + [f"--model_dir={model_dir}"])
        refusal = _error_line(err)
        temps = [
            p
            for p in glob.glob(f"{model_dir}/**/*", recursive=True)
            if ".tmp" in p or "_temp" in p or ".old" in p
        ]
        if not _one_line_refusal(code, err) or temps:
            detail = f"exit {code}; left {temps}; {err.strip()[-300:]}"
            return dict(fault=name, injected=1, outcome=LOST, detail=detail)
    code, _, err = _run(_trainer(model_dir, extra))
    if code == 0 and _same(_weights(model_dir), reference):
        warned = [line.split("] ", 1)[-1] for line in err.splitlines() if "; resuming from" in line]
        outcome, detail = RESUMED, refusal or (warned[0] if warned else "")
    elif _one_line_refusal(code, err) and _checkpoint_files(model_dir) == before:
        outcome, detail = REFUSED, _error_line(err)
    else:
        outcome, detail = LOST, f"exit {code}: {err.strip()[-300:]}"
    print(f"{name}: {outcome}", flush=True)
    return dict(fault=name, injected=1, outcome=outcome, detail=detail.replace(work, "D")[:400])


def _error_line(stderr) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("error: ")), "")


def kill_soak(work, reference, kills: int, rng: random.Random) -> dict:
    """SIGKILL at `kills` random moments (every other one while a checkpoint is being written),
    resuming with the same command each time; then the run is finished and compared with the
    reference."""
    model_dir = os.path.join(work, "killed")
    in_save = 0
    for i in range(kills):
        proc = _start(model_dir)
        target = _latest_step(model_dir) + rng.randrange(16, TOTAL_STEPS // (kills + 2))
        while _latest_step(model_dir) < target and proc.poll() is None:
            time.sleep(0.01)
        if i % 2:  # in a save: at the first sight of a save's temp folder
            deadline = time.time() + 10
            while (
                not glob.glob(os.path.join(model_dir, "checkpoints", "*_temp*"))
                and time.time() < deadline
                and proc.poll() is None
            ):
                time.sleep(0.0005)
            in_save += bool(glob.glob(os.path.join(model_dir, "checkpoints", "*_temp*")))
        else:
            time.sleep(rng.uniform(0, 0.5))
        proc.kill()
        proc.wait()
        print(f"kill {i + 1}: at checkpoint step {_latest_step(model_dir)}", flush=True)
    code, _, err = _run(_trainer(model_dir))
    same = code == 0 and _same(_weights(model_dir), reference)
    return dict(
        fault="SIGKILL at a random moment, one process",
        injected=kills,
        outcome=RESUMED if same else LOST,
        detail=f"{in_save} of them while a checkpoint was being written; final weights "
        + (
            "equal the uninterrupted run's"
            if same
            else f"differ (exit {code}: {err.strip()[-200:]})"
        ),
    )


def worker_kill(work) -> dict:
    """2 localhost workers, one killed (SIGKILL) mid-run: the survivor stops (health check), both
    are started again with the same command and finish; final weights equal an uninterrupted
    2-worker run's."""
    from framework.launch import tf_configs

    def start(model_dir):
        return [
            _start(
                model_dir,
                ["--strategy=multi_worker"],
                {"TF_CONFIG": json.dumps(c), "TFLOOPS_HEALTH_CHECK_SECONDS": "3"},
            )
            for c in tf_configs(2)
        ]

    full = os.path.join(work, "workers_full")
    codes = [w.wait(timeout=900) for w in start(full)]
    model_dir = os.path.join(work, "workers_killed")
    workers = start(model_dir)
    while _latest_step(model_dir) < TOTAL_STEPS // 3 and workers[0].poll() is None:
        time.sleep(0.02)
    workers[1].kill()
    survivor = workers[0].wait(timeout=300)
    workers = start(model_dir)
    again = [w.wait(timeout=900) for w in workers]
    same = codes == again == [0, 0] and _same(_weights(model_dir), _weights(full))
    return dict(
        fault="SIGKILL of one of 2 localhost workers",
        injected=1,
        outcome=RESUMED if same else LOST,
        detail=f"the survivor exited {survivor}; both restarted: exits {again}; final weights "
        + ("equal an uninterrupted 2-worker run's" if same else "differ or the run failed"),
    )


def main(argv):
    from absl import flags

    from benchmarks.report import machine_setup, write_report

    FLAGS = flags.FLAGS
    rng = random.Random(FLAGS.seed)
    work = tempfile.mkdtemp(prefix="tfloops_faults_")
    try:
        code, _, err = _run(_trainer(os.path.join(work, "reference")))
        assert code == 0, err[-2000:]
        reference = _weights(os.path.join(work, "reference"))
        faults = (
            list(FAULTS)[:4] + ["every checkpoint truncated", "disk full during a checkpoint"]
            if FLAGS.smoke
            else list(FAULTS)
        )
        rows = fault_table(work, reference, faults)
        if FLAGS.soak or FLAGS.smoke:
            rows.append(kill_soak(work, reference, 2 if FLAGS.smoke else FLAGS.kills, rng))
        if FLAGS.soak and not FLAGS.smoke:
            rows.append(worker_kill(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        expected = REFUSED if row["fault"] in EXPECT_REFUSED else RESUMED
        row["as expected"] = "yes" if row["outcome"] == expected else "NO"
    lost = sum(row["outcome"] == LOST for row in rows)
    summary = {
        "faults": len(rows),
        "injected": sum(r["injected"] for r in rows),
        "resumed": sum(r["outcome"] == RESUMED for r in rows),
        "refused_with_one_line": sum(r["outcome"] == REFUSED for r in rows),
        "lost": lost,
        "smoke": FLAGS.smoke,
    }
    out = FLAGS.out or os.path.join(ROOT, "benchmarks", "reports", "faults")
    write_report(
        out,
        title="Faults: damaged checkpoints and run files, failed writes, kills (issue 33)",
        summary=summary,
        rows=rows,
        columns=["fault", "injected", "outcome", "as expected", "detail"],
        setup={
            **machine_setup(),
            "command": "python -m benchmarks.faults"
            + (" --soak" if FLAGS.soak else "")
            + (f" --kills={FLAGS.kills}" if FLAGS.soak else ""),
            "trainer": "python -m trainers.mnist " + " ".join(COMMAND),
        },
        notes="resumed: the same command finished with the weights of the run never touched, "
        "bit for bit. refused with one line: exit 2, one line naming the file and the way "
        "out, no checkpoint moved or deleted. lost: anything else.",
    )
    print(json.dumps(summary))
    if lost:
        sys.exit(f"{lost} fault(s) lost a run: see {out}/report.md")


if __name__ == "__main__":
    if sys.argv[1:2] == ["inject"]:  # a trainer with a failing writer (fault_table starts it)
        inject(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        from absl import app, flags

        flags.DEFINE_bool(
            "soak", False, "Also SIGKILL one run --kills times, and one of 2 workers once."
        )
        flags.DEFINE_integer("kills", 10, "SIGKILLs of the soak.")
        flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
        flags.DEFINE_bool(
            "smoke", False, "A few faults and 2 kills (checks that the report can be made)."
        )
        flags.DEFINE_string("out", "", "Report folder (default benchmarks/reports/faults).")
        app.run(main)
