"""Build the tf.distribute strategy named by `--strategy`, or fail at once with what to do
instead."""

import glob
import json
import os
import weakref
from importlib import metadata

import tensorflow as tf
from absl import logging
from tensorflow.python.distribute import collective_all_reduce_strategy

from framework import tf_startup
from framework.config import ConfigError
from framework.tpu_lock import busy_message

# The kernel driver lists each NVIDIA GPU here, whether or not this TensorFlow has CUDA libraries.
NVIDIA_GPU_GLOB, NVIDIA_DEVICE_GLOB = "/proc/driver/nvidia/gpus/*", "/dev/nvidia[0-9]*"
_warned_unseen_gpus = False


def nvidia_gpus() -> list[str]:
    """NVIDIA GPUs the machine has (per its driver), seen by TensorFlow or not."""
    return sorted(glob.glob(NVIDIA_GPU_GLOB)) or sorted(glob.glob(NVIDIA_DEVICE_GLOB))


def check_gpus_seen(strategy: str, num_cpu_devices: int = 0) -> None:
    """Never train on the CPU of a GPU box in silence: TensorFlow without CUDA libraries sees no
    GPU.

    --strategy=mirrored|one_device stop (ConfigError: exit 2 from the CLI); others warn once. CPU
    replicas asked for (--num_cpu_devices=N>1) are the CPU on purpose."""
    global _warned_unseen_gpus
    if strategy == "tpu" or num_cpu_devices > 1:
        return
    if tf.config.list_physical_devices("GPU") or not nvidia_gpus():
        return
    cause = (
        f"this machine has {len(nvidia_gpus())} NVIDIA GPU(s) but TensorFlow sees none (installed "
        "without CUDA libraries, or CUDA_VISIBLE_DEVICES hides them): run `make setup` on this "
        "machine (where nvidia-smi works it reinstalls the venv with tensorflow[and-cuda]) or pip "
        f"install 'tensorflow[and-cuda]=={tf.__version__}'"
    )
    if strategy in ("mirrored", "one_device"):
        raise ConfigError(f"--strategy={strategy}: {cause}; --strategy=default trains on the CPU")
    if not _warned_unseen_gpus:
        _warned_unseen_gpus = True
        logging.warning("training on the CPU: %s", cause)


def configure_cpu_devices(num_devices: int) -> None:
    """Split the CPU into `num_devices` logical devices (multi-replica runs and tests on a laptop).

    Must happen before TensorFlow initialises its runtime; a notebook that already ran TensorFlow
    keeps its devices, which is fine when it already has enough of them.
    """
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as err:  # runtime already initialised (second run in a notebook)
        have = len(tf.config.list_logical_devices("CPU"))
        if have < num_devices:
            raise ConfigError(
                f"--num_cpu_devices={num_devices}: TensorFlow is already initialised with "
                f"{have} CPU device(s); restart the Python process (notebook: restart the "
                "runtime) and build the trainer before running any other TensorFlow code"
            ) from err


def configure_gpu_memory(growth: bool = True) -> None:
    """GPU memory grows as it is needed (`growth`), so that processes can share a GPU (test workers,
    a notebook beside a run); without it TensorFlow maps nearly all of each GPU at the start. Must
    happen before TensorFlow initialises its runtime; a runtime already initialised keeps its
    setting."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, growth)
        except (RuntimeError, ValueError):  # already initialised (a second run in a notebook)
            return


def make_strategy(
    name: str, *, num_cpu_devices: int = 0, tpu: str = "local", gpu_memory_growth: bool = True
) -> tf.distribute.Strategy:
    """`--strategy` as a tf.distribute strategy. mirrored with --num_cpu_devices=N>1 is N CPU
    replicas, whether or not GPUs are visible (how the tests check 2 replicas against 1 on any
    machine)."""
    check_gpus_seen(name, num_cpu_devices)
    configure_gpu_memory(gpu_memory_growth)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        configure_cpu_devices(num_cpu_devices)
        if num_cpu_devices <= 1 and tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        if num_cpu_devices:
            cpus = cpus[:num_cpu_devices]
        # Reduce through one device: CPU collectives can pair up sync-BatchNorm's all-reduce with
        # the gradients' one in a different order on each replica ("Shape mismatch in the
        # collective").
        return tf.distribute.MirroredStrategy(
            devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if name == "multi_worker":
        return _multi_worker_strategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    raise ConfigError(f"--strategy={name!r}: unknown")


def _multi_worker_strategy():
    if "TF_CONFIG" not in os.environ:
        raise ConfigError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable (cluster and "
            "task); on one machine start the workers with "
            "`python -m framework.launch --workers=2 -- python -m trainers.mnist ...`"
        )
    try:
        json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {err}") from err
    # A dead peer fails the others through the strategy's own health check (a heartbeat between
    # workers that aborts the collectives). A timeout on every collective is TF's debug option (a
    # sleeping thread per collective): opt-in, for a cluster whose health check cannot see a hang.
    timeout = os.environ.get("TFLOOPS_COLLECTIVE_TIMEOUT")
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=float(timeout) if timeout else None
    )
    # TFLOOPS_HEALTH_CHECK_SECONDS=S: the health check's interval (TF's default 30 s, which is about
    # how long a dead peer takes to fail the others). TF has no public setting: its class attribute,
    # set before the strategy starts its check thread.
    interval = os.environ.get("TFLOOPS_HEALTH_CHECK_SECONDS")
    if interval:
        extended = collective_all_reduce_strategy.CollectiveAllReduceExtended
        if hasattr(extended, "_check_health_interval"):
            extended._check_health_interval = float(interval)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def on_tpu_vm() -> bool:
    """Whether this machine has TPU chips attached (a TPU VM): their device files."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _tpu_strategy(tpu_name: str):
    busy = busy_message()
    if busy:  # TensorFlow would find no TPU, and say why only in the start-up lines it hid
        tf_startup.replay_hidden()
        raise ConfigError(f"--strategy=tpu: {busy}")
    # Without a TPU the resolver can wait on metadata servers for minutes: look for the device
    # first.
    if tpu_name == "local" and not on_tpu_vm() and "TPU_NAME" not in os.environ:
        raise ConfigError(
            "--strategy=tpu: no TPU found on this machine (no /dev/accel* or /dev/vfio devices, "
            "TPU_NAME unset). On Colab choose Runtime > Change runtime type > TPU; on "
            "Kaggle choose the 'TPU VM v5e-8' accelerator; elsewhere pass --tpu=NAME, or "
            "use --strategy=default"
        )
    try:
        # tpu="local" is what TPU VMs need; the default resolver fails there (tensorflow#70827).
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", tpu_name)
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        tf_startup.replay_hidden()  # libtpu's own reason ("TPU is already in use by process ...")
        busy = busy_message()
        raise ConfigError(
            f"--strategy=tpu: could not connect to TPU {tpu_name!r} ({err}). "
            + (
                busy
                or "Likely causes: another process holds the TPU (a notebook kernel that "
                "imported TensorFlow: restart the runtime), tensorflow-cpu instead of "
                f"tensorflow-tpu (Kaggle's image; this is {tf_package()}), a libtpu newer "
                "than TF 2.20 was built for (pip install libtpu==0.0.14), PJRT variables "
                "set after TensorFlow was imported (see WORKSPACE.md's TPU cells), or a "
                "TPU generation that needs TFLOOPS_TPU_RUNTIME=stream_executor (v2-v4) or "
                "TFLOOPS_TPU_MLIR_BRIDGE=1"
            )
        ) from err
    return tf.distribute.TPUStrategy(resolver)


def tf_package() -> str:
    for name in ("tensorflow-tpu", "tensorflow-cpu", "tensorflow"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "an unknown TensorFlow package"


def agreed(strategy: tf.distribute.Strategy, value: float, op=tf.distribute.ReduceOp.MEAN) -> float:
    """`value` reduced over the workers of a MultiWorkerMirroredStrategy (an all-reduce), else
    `value`: each worker reads its own clock or signals, and they must take the same decisions."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return value
    reducers = _reducers.setdefault(strategy, {})
    if op not in reducers:  # compiled once: an eager collective warns of its overhead at every call
        reducers[op] = tf.function(
            lambda v: strategy.reduce(op, strategy.run(lambda: v), axis=None)
        )
    return float(reducers[op](tf.constant(value, tf.float64)))


_reducers = weakref.WeakKeyDictionary()  # strategy -> {ReduceOp: compiled all-reduce of one float}


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The worker that writes outputs. Others write to a scratch folder (collectives need them to
    save)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def worker_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 0
    return int(resolver.task_id or 0)
