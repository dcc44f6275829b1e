"""TensorFlow 2.20 reaches a TPU VM's chips through PJRT; its variables must be set before TensorFlow is
imported (as Keras' TF-on-TPU example does). No TensorFlow import here, on purpose."""

import importlib.util
import os


def configure_pjrt() -> str | None:
    """Point TensorFlow at libtpu's libtpu.so (values already set are kept). Returns the library path,
    or None when libtpu is not installed (then this is not a TPU VM set up for TensorFlow)."""
    spec = importlib.util.find_spec("libtpu")
    if spec is None or not spec.origin:
        return None
    library = os.path.join(os.path.dirname(spec.origin), "libtpu.so")
    for name, value in (
        ("PJRT_DEVICE", "TPU"),
        ("NEXT_PLUGGABLE_DEVICE_USE_C_API", "true"),
        ("TF_PLUGGABLE_DEVICE_LIBRARY_PATH", library),
    ):
        os.environ.setdefault(name, value)
    return os.environ["TF_PLUGGABLE_DEVICE_LIBRARY_PATH"]
