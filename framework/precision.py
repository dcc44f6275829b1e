"""Mixed precision: Keras 3 dtype policies for the model, dynamic loss scaling for fp16."""

import contextlib

import keras
import tensorflow as tf

POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


@contextlib.contextmanager
def dtype_policy(mixed_precision: str):
    """Build layers under the policy, then restore the global one (a notebook may build several
    models)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def wrap_optimizer(optimizer, mixed_precision: str):
    """fp16 needs dynamic loss scaling; bf16 has float32's range and does not."""
    if mixed_precision == "fp16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def bf16_is_fast() -> bool:
    """bf16 pays off on TPUs, GPUs from Ampere on, and CPUs with AVX512_BF16 or AMX (oneDNN
    kernels)."""
    if tf.config.list_physical_devices("TPU"):
        return True
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get(
            "compute_capability", (0, 0)
        )
        return tuple(capability) >= (8, 0)
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
