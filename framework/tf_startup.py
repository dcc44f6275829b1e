"""Import TensorFlow without its start-up lines, for our commands (`--verbose` shows them)."""

import contextlib
import ctypes
import mmap
import os
import re
import sys
import tempfile

_hidden: list[str] = []  # what the quiet import wrote to stderr, for replay_hidden()


def import_tensorflow(verbose: bool = False):
    """Imports TensorFlow without its start-up lines (oneDNN, CUDA not found, absl::InitializeLog).

    TF writes them through C++ absl logging before absl::InitializeLog(), which ignores
    TF_CPP_MIN_LOG_LEVEL, so only file descriptor 2 can hide them: it points at a temporary file
    during the import and the first device listing (where cuInit fails on a machine without a GPU),
    and what was written there is replayed if the import fails, and kept for `replay_hidden()` (a
    TPU that cannot start says why only there). oneDNN itself stays on (speed).
    """
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf  # lazy: keeps TF out of --help

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the INFO/WARNING lines after the import
    with _stderr_captured():
        import tensorflow as tf  # lazy: keeps TF out of --help

        tf.config.list_physical_devices()
    _absl_min_log_level(tf)
    return tf


def _absl_min_log_level(tf) -> None:
    """TF 2.20 never calls absl::InitializeLog(), so its first XLA compile (our GELU kernels) writes
    "All log messages before absl::InitializeLog() ..." and an INFO line to stderr,
    TF_CPP_MIN_LOG_LEVEL or not (TF 2.21 initialises the log itself: tensorflow#102212).
    absl::SetMinLogLevel, exported by libtensorflow_framework, applies TF_CPP_MIN_LOG_LEVEL to those
    lines too. Its C++ name carries absl's version, so it is looked up in the library's symbol names
    (near the start of the file)."""
    if tuple(int(x) for x in tf.__version__.split(".")[:2]) >= (2, 21):
        return
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    path = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_framework.so.2")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = re.search(rb"_ZN4absl12lts_\d+14SetMinLogLevelENS0_18LogSeverityAtLeastE", data)
            if found is None or not level.isdigit():
                return
            symbol = found.group().decode()
        getattr(ctypes.CDLL(path), symbol)(ctypes.c_int(min(int(level), 3)))
    except (OSError, AttributeError, ValueError):  # another build of TF: its lines stay
        return


def replay_hidden() -> str:
    """Writes the start-up lines the quiet import hid to stderr (once); returns them."""
    text = "".join(_hidden).strip()
    _hidden.clear()
    if text:
        print(f"TensorFlow's start-up lines (hidden at import):\n{text}", file=sys.stderr)
    return text


@contextlib.contextmanager
def _stderr_captured():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        _hidden.append(captured.read(1 << 16).decode(errors="replace"))
