"""What the model says on every example of a split: the eval step's prepare and forward (TTA and
eval transforms included), one compiled call per evaluation batch, gathered over the replicas in row
order."""

import numpy as np
import tensorflow as tf


def make_predict_batch(trainer, jit_compile: bool):
    """A compiled call: one evaluation batch -> (logits, labels, weight) of the global batch, in row
    order (strategy.gather concatenates the replicas' slices, which are consecutive rows)."""
    task, model, strategy = trainer.task, trainer.model, trainer.strategy

    def replica_step(batch):
        *parts, weight = batch
        inputs, labels = task.prepare(parts, seed=None, training=False)
        return task.forward(model, inputs, training=False), labels, weight

    if jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy):
        replica_step = tf.function(
            replica_step, jit_compile=True
        )  # the same logits as the eval step

    @tf.function
    def predict_batch(iterator):
        outputs = strategy.run(replica_step, args=(next(iterator),))
        return tuple(strategy.gather(t, axis=0) for t in outputs)

    return predict_batch


def predict(predict_batch, iterator, num_batches: int) -> dict[str, np.ndarray]:
    """`logits` [N, ...] (float32), `labels` [N, ...] and `indices` [N] (each row's position in the
    split; an example a streamed source could not read is left out), from one pass of the split's
    evaluation stream. Run it on every worker."""
    parts = [[t.numpy() for t in predict_batch(iterator)] for _ in range(num_batches)]
    logits, labels, weight = (np.concatenate(column) for column in zip(*parts))
    kept = weight > 0  # padding rows (and unreadable examples) have weight 0
    return {"logits": logits[kept], "labels": labels[kept], "indices": np.nonzero(kept)[0]}
