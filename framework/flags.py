"""absl flags for every TrainConfig field, generated from the dataclass so the two never drift.

`define_flags(**defaults)` may be called again (a notebook re-running a cell): flags already defined
are kept, only their defaults are updated.
"""
import dataclasses

from absl import flags

from framework.config import PRECISIONS, SCHEDULES, STRATEGIES, TrainConfig

HELP = {
    "model_dir": "Output folder: checkpoints, TensorBoard, history.json, result.json, model.keras.",
    "strategy": f"tf.distribute strategy: {', '.join(STRATEGIES)}.",
    "num_cpu_devices": "With --strategy=mirrored on a CPU: split it into N logical devices (replicas).",
    "tpu": "TPU name for TPUClusterResolver ('local' on Colab/Kaggle TPU VMs).",
    "global_batch_size": "Examples per step over all replicas (each gets global/replicas).",
    "eval_batch_size": "Global evaluation batch (0: same as --global_batch_size).",
    "epochs": "Passes over the training set.",
    "train_steps": "Total steps; overrides --epochs when > 0.",
    "steps_per_loop": "Steps per compiled call (Python returns only between loops).",
    "learning_rate": "Peak learning rate.",
    "lr_schedule": f"Learning-rate schedule: {', '.join(SCHEDULES)}.",
    "warmup_steps": "Linear warm-up steps (cosine, onecycle).",
    "warmup_fraction": "Warm-up as a fraction of all steps (the larger of the two wins).",
    "onecycle_start": "onecycle: LR at the first step as a fraction of the peak (airbench: 0.2).",
    "onecycle_end": "onecycle: LR at the last step as a fraction of the peak (airbench: 0.07).",
    "lookahead_every": "Lookahead every N steps (airbench: 5): weights <- EMA of weights; 0 = off.",
    "lookahead_decay": "Lookahead EMA decay per step, ramped by (step/total)**3 (airbench: 0.95).",
    "mixed_precision": f"{', '.join(PRECISIONS)}: bf16 or fp16 compute with float32 weights and logits.",
    "jit_compile": "Compile the step with XLA.",
    "deterministic": "Deterministic ops (tf.config.experimental.enable_op_determinism): bit-exact resume.",
    "eval_every_epochs": "Evaluate every N epochs and after the last (0: only after the last); "
                         "best checkpoint, early stop, plateau and target act at evaluations.",
    "checkpoint_every": "Checkpoint every N steps (0: at each epoch end).",
    "monitor": "Evaluation metric for best checkpoint, early stopping and plateau ('' = val/test accuracy).",
    "target": "Stop when an evaluation reaches it, e.g. test_accuracy>=0.94.",
    "sync_batchnorm": "BatchNorm statistics over the global batch instead of per replica.",
}


def define_flags(**defaults) -> None:
    for field in dataclasses.fields(TrainConfig):
        default = defaults.get(field.name, field.default)
        if field.name in flags.FLAGS:
            flags.FLAGS.set_default(field.name, default)
            continue
        help_text = HELP.get(field.name, f"TrainConfig.{field.name}.")
        if field.type is bool or field.type == "bool":
            flags.DEFINE_bool(field.name, default, help_text)
        elif field.type is int or field.type == "int":
            flags.DEFINE_integer(field.name, default, help_text)
        elif field.type is float or field.type == "float":
            flags.DEFINE_float(field.name, default, help_text)
        else:
            flags.DEFINE_string(field.name, default, help_text)


def config_from_flags(**overrides) -> TrainConfig:
    """A TrainConfig from parsed flags; raises ConfigError on a bad value."""
    values = {f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)}
    values.update(overrides)
    return TrainConfig(**values)
