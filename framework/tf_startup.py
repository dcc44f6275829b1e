"""Import TensorFlow without its start-up lines, for our commands (`--verbose` shows them)."""

import contextlib
import os
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
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the INFO/WARNING lines after the import
    with _stderr_captured():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


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
