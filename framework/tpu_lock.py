"""Who holds the TPU: libtpu's lock file and the process that holds it (no TensorFlow here).

One process owns a TPU VM's chips: libtpu takes a lock on /tmp/libtpu_lockfile (TFLOOPS_TPU_LOCKFILE
moves it, for tests) and holds it until the process exits. framework.tpu_env (before TensorFlow) and
framework.strategies (when a TPU does not start) both say who holds it.
"""

import os


def lock_file() -> str:
    return os.environ.get("TFLOOPS_TPU_LOCKFILE", "/tmp/libtpu_lockfile")


def lock_holder(path: str | None = None) -> int | None:
    """The pid of the process that holds libtpu's lock file, if one does: the kernel's POSIX lock
    table (/proc/locks, where lockf() locks are listed by inode), else a pid written in the file."""
    path = path or lock_file()
    try:
        stat = os.stat(path)
    except OSError:
        return None
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = [
                    x for x in line.split() if x != "->"
                ]  # "->": a process waiting on the lock
                if len(fields) < 6 or fields[1] != "POSIX":
                    continue
                major, minor, inode = fields[5].split(":")
                if int(inode) == stat.st_ino and (int(major, 16), int(minor, 16)) == (
                    os.major(stat.st_dev),
                    os.minor(stat.st_dev),
                ):
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    try:
        with open(path) as f:
            text = f.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def busy_message(path: str | None = None) -> str | None:
    """Why this process cannot have the TPU, when another process holds its lock; else None."""
    pid = lock_holder(path)
    if pid is None or pid == os.getpid():
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return (
        f"another process holds the TPU (pid {pid}{': ' + command[:80] if command else ''}; "
        f"lock {path or lock_file()}): one process at a time owns a TPU VM's chips. In a "
        "notebook, a cell that imported TensorFlow with the TPU keeps it: restart the "
        "runtime, then check and train only in `!python` cells (`!python -m "
        "framework.tpu_env --check`); elsewhere stop that process"
    )
