"""What a TPU cannot run, refused before anything runs (`--strategy=tpu`), in one line (exit 2).

TPU VM builds of TensorFlow have no XLA for the host CPU ("could not find registered transfer
manager for platform Host": tensorflow#58934, #61976), and the TPU compiles the whole step with XLA.
So on a TPU:
- `--augment_on=host` (the compiled policy in tf.data, on the host) would fail at the first batch;
- an augmentation op without an XLA kernel (a callable of your own, an op registered with xla=False)
  would fail in the TPU compilation, with TensorFlow's message and not the op's name.
"""

import augment
from framework.config import ConfigError


def check(exp, config) -> None:
    """Raises ConfigError when `exp` asks a TPU for what it cannot run; nothing for other
    strategies."""
    if config.strategy != "tpu" or getattr(exp, "augment", "none") == "none":
        return
    if getattr(exp, "augment_on", "device") == "host":
        raise ConfigError(
            "--augment_on=host with --strategy=tpu: TPU builds of TensorFlow cannot run the "
            f"compiled --augment={exp.augment!r} on the host CPU (tensorflow#58934); use "
            "--augment_on=device (it runs in the TPU step)"
        )

    policy = augment.get_policy(exp.augment, num_classes=10, image_shape=(32, 32, 3))
    names = uncompiled_ops(policy)
    if names:
        raise ConfigError(
            f"--augment={exp.augment!r} with --strategy=tpu: {', '.join(names)} cannot compile "
            "with XLA (not an op of augment.ops, or registered with xla=False), and a TPU "
            "compiles the whole step; use ops that compile there"
        )


def uncompiled_ops(policy) -> list[str]:
    """The names of the policy's steps that XLA cannot compile: what their ops declare (xla=)."""
    from augment import ops  # lazy: keeps TF out of --help

    return [name for name, fn in policy.steps if not ops.compiles(fn)]
