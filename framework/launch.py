"""Start N real worker processes on localhost for MultiWorkerMirroredStrategy, to try it on one machine.

    python -m framework.launch --workers=2 -- python -m trainers.mnist --strategy=multi_worker ...

Each worker gets its own TF_CONFIG (cluster of localhost ports, its task index) and its output is
prefixed with `[worker i]`. If one worker fails, the others are stopped, so nothing hangs forever in
a collective; the exit status is the first failure's. On a real cluster, set TF_CONFIG per machine
instead (WORKSPACE.md).
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

flags.DEFINE_integer("workers", 2, "Number of worker processes.")
flags.DEFINE_integer("grace_seconds", 10, "After a worker fails, how long the others get to exit.")
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
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(num_workers)]


def _pump(stream, prefix):
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.flush()


def launch(command: list[str], num_workers: int, grace_seconds: float = 10.0) -> int:
    """Run `command` once per worker; returns 0 if all succeed, else the first failing exit status."""
    procs, pumps = [], []
    for i, tf_config in enumerate(tf_configs(num_workers)):
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}] ".encode()), daemon=True)
        pump.start()
        procs.append(proc)
        pumps.append(pump)
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed:
                status = failed[0].returncode
                print(f"[launch] worker {procs.index(failed[0])} exited with status {status}; stopping "
                      "the others", file=sys.stderr)
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


def main(argv):
    command = argv[1:]
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("error: no command: python -m framework.launch --workers=2 -- python -m trainers.mnist "
              "--strategy=multi_worker", file=sys.stderr)
        sys.exit(2)
    if FLAGS.workers < 1:
        print(f"error: --workers={FLAGS.workers}: must be >= 1", file=sys.stderr)
        sys.exit(2)
    sys.exit(launch(command, FLAGS.workers, FLAGS.grace_seconds))


if __name__ == "__main__":
    app.run(main)
