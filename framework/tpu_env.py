"""TensorFlow on a TPU VM: the environment it needs before its import, and who holds the TPU.

TF 2.20 reaches a TPU VM's chips through PJRT; its variables must be set before TensorFlow is
imported (as Keras' TF-on-TPU example does). Switches, read from the environment (a notebook cell
sets them):

- TFLOOPS_TPU_RUNTIME=stream_executor: set no PJRT variables, for the TPU generations where TF's
  older stream-executor path is the one that works (v2-v4 on TRC or Cloud TPU VMs); default `pjrt`
  (v5e, v6e).
- TFLOOPS_TPU_MLIR_BRIDGE=1: also set the MLIR-bridge TF_XLA_FLAGS of keras-io's TF-on-TPU example,
  the switch to try when PJRT finds no TPU.

One process owns a TPU VM's chips: libtpu takes a lock on /tmp/libtpu_lockfile (TFLOOPS_TPU_LOCKFILE
moves it, for tests) and holds it until the process exits. A notebook kernel that imported
TensorFlow with the TPU therefore keeps it from every `!python` cell after it: check the TPU in a
subprocess,

    python -m framework.tpu_env --check

which prints the TF and libtpu versions and the TPU devices, then exits (and frees the TPU).
No TensorFlow import at module level, on purpose.
"""

import importlib.util
import os
import sys
from importlib import metadata

from framework.config import ConfigError
from framework.tf_startup import import_tensorflow
from framework.tpu_lock import busy_message, lock_file, lock_holder  # noqa: F401  re-exported

RUNTIMES = ("pjrt", "stream_executor")
# keras-io's TF-on-TPU example sets these; unverified here on hardware.
MLIR_BRIDGE_FLAGS = (
    "--tf_mlir_enable_mlir_bridge=true",
    "--tf_mlir_enable_convert_control_to_data_outputs_pass=true",
    "--tf_mlir_enable_merge_control_flow_pass=true",
    "--tf_xla_sparse_core_disable_table_stacking=true",
)


def configure_pjrt() -> str | None:
    """Point TensorFlow at libtpu's libtpu.so (values already set are kept). Returns the library
    path, or None when libtpu is not installed (then this is not a TPU VM set up for TensorFlow) or
    TFLOOPS_TPU_RUNTIME=stream_executor asks for no PJRT. Raises ConfigError for an unknown
    runtime."""
    runtime = os.environ.get("TFLOOPS_TPU_RUNTIME", "pjrt") or "pjrt"
    if runtime not in RUNTIMES:
        raise ConfigError(
            f"TFLOOPS_TPU_RUNTIME={runtime!r}: must be one of {', '.join(RUNTIMES)} "
            "(stream_executor: TPU v2-v4, where PJRT finds no TPU)"
        )
    if os.environ.get("TFLOOPS_TPU_MLIR_BRIDGE", "") not in ("", "0"):
        current = os.environ.get("TF_XLA_FLAGS", "").split()
        os.environ["TF_XLA_FLAGS"] = " ".join(
            current + [f for f in MLIR_BRIDGE_FLAGS if f not in current]
        )
    spec = importlib.util.find_spec("libtpu")
    if runtime == "stream_executor" or spec is None or not spec.origin:
        return None
    library = os.path.join(os.path.dirname(spec.origin), "libtpu.so")
    for name, value in (
        ("PJRT_DEVICE", "TPU"),
        ("NEXT_PLUGGABLE_DEVICE_USE_C_API", "true"),
        ("TF_PLUGGABLE_DEVICE_LIBRARY_PATH", library),
    ):
        os.environ.setdefault(name, value)
    return os.environ["TF_PLUGGABLE_DEVICE_LIBRARY_PATH"]


def check() -> int:
    """`python -m framework.tpu_env --check`: TF and libtpu versions and the TPU devices, in this
    process only (it exits, and so frees the TPU). 0: TPU found; 2: none, with what to do (one
    line)."""
    busy = busy_message()
    if busy:  # before TensorFlow: its import would not find the TPU, and hide why
        print(f"error: {busy}", file=sys.stderr)
        return 2
    try:
        path = configure_pjrt()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    tf = import_tensorflow()  # lazy: TensorFlow, after the PJRT variables, quietly
    from framework import strategies  # lazy: keeps TF out of --help

    try:
        libtpu = metadata.version("libtpu")
    except metadata.PackageNotFoundError:
        libtpu = "not installed"
    print(f"tensorflow {tf.__version__} ({strategies.tf_package()}), libtpu {libtpu}")
    print(f"runtime: {os.environ.get('TFLOOPS_TPU_RUNTIME') or 'pjrt'}, libtpu.so: {path}")
    try:
        strategy = strategies.make_strategy("tpu")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    devices = tf.config.list_logical_devices("TPU")
    print(f"{len(devices)} TPU device(s), {strategy.num_replicas_in_sync} replicas:")
    for device in devices:
        print(f"  {device.name}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        print("usage: python -m framework.tpu_env --check", file=sys.stderr)
        sys.exit(2)
    sys.exit(check())
