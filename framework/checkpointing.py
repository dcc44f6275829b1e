"""Checkpoints of everything a resume needs: weights, optimizer slots, step, LR scale, loop state
(and the lookahead averages when it is on).

The data position is the step itself (the data order is a function of seed and epoch, see
input_pipeline.py), and the augmentation RNG is stateless in (seed, step, replica), so
(weights, optimizer, step, lr_scale, controller state) is the complete state of a run. Keras'
dropout seed-generator states are model variables and travel with the weights.

`tf.train.CheckpointManager` writes the index file only after the data files, so a checkpoint
half-written when the process died is never the one restored.
"""

import json
import os
import shutil

import tensorflow as tf


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or does not fit this run; the message says what to do."""


class Checkpointer:
    def __init__(
        self,
        trainer,
        directory: str,
        *,
        max_to_keep: int,
        is_chief: bool = True,
        worker_id: int = 0,
    ):
        # Loop state (history, controls) as JSON in a string variable: saved atomically with the weights.
        self.state = tf.Variable("{}", dtype=tf.string, trainable=False, name="loop_state")
        self.checkpoint = tf.train.Checkpoint(
            # Keras 3 models do not expose their variables to tf.train.Checkpoint: list them.
            model_variables=list(trainer.model.variables),
            optimizer=trainer.optimizer,
            step=trainer.step,
            lr_scale=trainer.lr_scale,
            loop_state=self.state,
            **({"lookahead": trainer.lookahead.averages} if trainer.lookahead is not None else {}),
        )
        self.directory = directory
        # Every worker must take part in a multi-worker save; only the chief's copy is kept.
        write_dir = (
            directory if is_chief else os.path.join(directory, f".scratch_worker_{worker_id}")
        )
        self._scratch = None if is_chief else write_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, write_dir, max_to_keep=max_to_keep
        )

    @property
    def latest(self) -> str | None:
        # Every worker restores the chief's checkpoint (its own copies were scratch, now deleted).
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> dict | None:
        """Restore the newest complete checkpoint; returns its loop state, or None for a fresh run."""
        path = self.latest
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise CheckpointError(
                f"cannot resume from {path}: it was written by a different configuration (another "
                f"model, optimizer or precision?): {str(err).splitlines()[0]}. Use a new --model_dir, "
                "or --fresh_start to start over there (the old run's files are moved aside)"
            ) from err
        return json.loads(self.state.numpy().decode())

    def save(self, step: int, loop_state: dict) -> str:
        self.state.assign(json.dumps(loop_state))
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as err:
            raise CheckpointError(
                f"could not write a checkpoint at step {step} to {self.directory}: "
                f"{err}. Is the disk full? The previous checkpoint is intact"
            ) from err
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        return path
