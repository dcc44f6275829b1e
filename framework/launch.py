"""Start N real worker processes on localhost for MultiWorkerMirroredStrategy, to try it on one
machine.

    python -m framework.launch --workers=2 -- python -m trainers.mnist --strategy=multi_worker ...

Each worker gets its own TF_CONFIG (cluster of localhost ports, its task index) and its output is
prefixed with `[worker i]`. On a GPU box each worker gets its own GPUs (CUDA_VISIBLE_DEVICES):
the visible GPUs split evenly, or `--gpus_per_worker=K` each; 0 runs every worker on the CPU. If one
worker fails, the others are stopped, so nothing hangs forever in a collective; the exit status is
the first failure's. On a real cluster, set TF_CONFIG per machine instead (WORKSPACE.md).

    python -m framework.launch --workers=1 --data_workers=2 -- python -m trainers.cifar ...

`--data_workers=N` also starts a tf.data service on localhost, a dispatcher and N data workers in
one child process of their own (`python -m framework.data_service`, output prefixed `[data
service]`), and appends `--data_service=grpc://localhost:PORT` to the command: the trainers' input
is made there (framework/data_service.py says what that changes in the data order). It sees no GPU
(CUDA_VISIBLE_DEVICES=), and stops with the trainers.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

from framework.data_service import READY

flags.DEFINE_integer("workers", 2, "Number of worker processes.")
flags.DEFINE_integer("grace_seconds", 10, "After a worker fails, how long the others get to exit.")
flags.DEFINE_integer(
    "gpus_per_worker",
    -1,
    "GPUs each worker sees (CUDA_VISIBLE_DEVICES); -1: the visible "
    "GPUs split evenly over the workers; 0: none (CPU workers).",
)
flags.DEFINE_integer(
    "data_workers",
    0,
    "Also start a tf.data service here: a dispatcher and N data workers "
    "(one child process), and pass --data_service=grpc://localhost:PORT to the command; 0: none.",
)
flags.DEFINE_integer("data_service_timeout", 120, "Seconds to wait for the data service to start.")
FLAGS = flags.FLAGS


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_configs(num_workers: int) -> list[dict]:
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(num_workers)]}
    return [
        {"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(num_workers)
    ]


def visible_gpus() -> list[str]:
    """The GPU ids the workers may use: CUDA_VISIBLE_DEVICES when set, else each GPU `nvidia-smi -L`
    lists."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def gpu_assignments(num_workers: int, gpus: list[str], per_worker: int = -1) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each worker: disjoint, consecutive slices of `gpus`.

    Without GPUs (and per_worker -1) nothing is set (None). Raises ValueError when they do not go
    round."""
    if per_worker < 0:
        if not gpus:
            return [None] * num_workers
        per_worker = len(gpus) // num_workers
        if per_worker == 0:
            raise ValueError(
                f"{len(gpus)} GPU(s) for {num_workers} workers: use --workers<={len(gpus)}, or "
                "--gpus_per_worker=0 for CPU workers"
            )
    if per_worker * num_workers > len(gpus):
        raise ValueError(
            f"--gpus_per_worker={per_worker} x --workers={num_workers} needs "
            f"{per_worker * num_workers} GPUs; {len(gpus)} visible ({','.join(gpus) or 'none'})"
        )
    return [",".join(gpus[i * per_worker : (i + 1) * per_worker]) for i in range(num_workers)]


def _pump(stream, prefix):
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.flush()


def launch(
    command: list[str],
    num_workers: int,
    grace_seconds: float = 10.0,
    gpus: list[str | None] | None = None,
) -> int:
    """Run `command` once per worker; returns 0 if all succeed, else the first failing exit status.

    `gpus[i]`, if given and not None, is worker i's CUDA_VISIBLE_DEVICES (see gpu_assignments)."""
    procs, pumps = [], []
    gpus = gpus or [None] * num_workers
    for i, tf_config in enumerate(tf_configs(num_workers)):
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        if gpus[i] is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pump = threading.Thread(
            target=_pump, args=(proc.stdout, f"[worker {i}] ".encode()), daemon=True
        )
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                status = failed[0].returncode
                print(
                    f"[launch] worker {procs.index(failed[0])} exited with status {status}; "
                    "stopping the others",
                    file=sys.stderr,
                )
                _stop(procs, grace_seconds)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(procs, grace_seconds)
        status = 130
    for p in procs:
        p.wait()
    for pump in pumps:
        pump.join(timeout=5)
    return status or next((p.returncode for p in procs if p.returncode), 0)


def _stop(procs, grace_seconds):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + grace_seconds
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def data_service_env() -> dict:
    """The data service child's environment: no GPU (it decodes and batches on the CPU; a TensorFlow
    that saw the GPUs would take memory on each of them from the trainers)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def start_data_service(num_workers: int, timeout: float) -> tuple[subprocess.Popen, str]:
    """`python -m framework.data_service` with `num_workers` data workers; returns (process,
    address) once it serves. Its later output is prefixed `[data service]`. Raises RuntimeError if
    it does not start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "framework.data_service", f"--workers={num_workers}"],
        env=data_service_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    found = {}

    def read_until_ready():
        for line in iter(proc.stdout.readline, b""):
            text = line.decode(errors="replace")
            if text.startswith(READY):
                found["address"] = text[len(READY) :].split()[0]
                break
            found.setdefault("lines", []).append(text)

    reader = threading.Thread(target=read_until_ready, daemon=True)
    reader.start()
    reader.join(timeout)
    if "address" not in found:
        _stop([proc], 5)
        said = "".join(found.get("lines", [])[-5:]).strip()
        raise RuntimeError(
            f"the data service did not start within {timeout:.0f} s" + (f": {said}" if said else "")
        )
    threading.Thread(target=_pump, args=(proc.stdout, b"[data service] "), daemon=True).start()
    return proc, found["address"]


def main(argv):
    command = argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print(
            "error: no command: python -m framework.launch --workers=2 -- python -m trainers.mnist "
            "--strategy=multi_worker",
            file=sys.stderr,
        )
        sys.exit(2)
    if FLAGS.workers < 1 or FLAGS.data_workers < 0:
        print(
            f"error: --workers={FLAGS.workers} (must be >= 1), --data_workers={FLAGS.data_workers} "
            "(must be >= 0)",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        gpus = gpu_assignments(
            FLAGS.workers, visible_gpus() if FLAGS.gpus_per_worker else [], FLAGS.gpus_per_worker
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if any(gpus):
        print(
            "[launch] " + "; ".join(f"worker {i}: GPUs {g}" for i, g in enumerate(gpus)),
            file=sys.stderr,
        )
    service = None
    if FLAGS.data_workers:
        if any(arg.startswith("--data_service") for arg in command):
            print(
                "error: --data_workers starts a data service, and the command names one "
                "(--data_service): drop one of them",
                file=sys.stderr,
            )
            sys.exit(2)
        try:
            service, address = start_data_service(FLAGS.data_workers, FLAGS.data_service_timeout)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        print(
            f"[launch] data service {address}: {FLAGS.data_workers} data workers", file=sys.stderr
        )
        command = [*command, f"--data_service={address}"]
    try:
        status = launch(command, FLAGS.workers, FLAGS.grace_seconds, gpus)
    finally:
        if service is not None:
            _stop([service], FLAGS.grace_seconds)
    sys.exit(status)


if __name__ == "__main__":
    app.run(main)
