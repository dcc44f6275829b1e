"""Per-example transforms that need each example's identity and epoch, which the step does not see.

They run in the input pipeline's gather (`input_pipeline.train_dataset_fn(example_fn=...)`), on
uint8 rows, as `example_fn(rows, index, epoch) -> rows`: `rows` is the tuple of gathered arrays
(images first), `index` the examples' ids and `epoch` their epoch (both shaped like the batch of
ids). The stream stays a pure function of (seed, epoch), so a resume and the host-augmentation path
see the same images.
"""

import tensorflow as tf


def first_epoch_mirror(num_examples: int, seed: int) -> tf.Tensor:
    """Which examples alternating flip mirrors in even epochs (a random half; odd epochs: the
    others)."""
    draws = tf.random.stateless_uniform(
        [num_examples], seed=tf.stack([tf.cast(seed, tf.int64), tf.constant(-1, tf.int64)])
    )
    return draws < 0.5


def alternating_flip(num_examples: int, seed: int):
    """airbench's alternating flip: in the first epoch a random half of the images is mirrored, and
    every later epoch mirrors exactly the images the epoch before did not, so each image is seen
    both ways in every two epochs (a random flip leaves a quarter of them the same way two epochs
    running)."""

    def example_fn(rows, index, epoch):
        images, *rest = rows
        if images.shape.rank is not None and images.shape.rank - index.shape.rank != 3:
            raise ValueError(
                f"alternating_flip mirrors images (N, H, W, C); the first array has examples "
                f"of shape {images.shape[index.shape.rank :]}"
            )
        mirror = tf.math.logical_xor(
            tf.gather(first_epoch_mirror(num_examples, seed), index), epoch % 2 == 1
        )
        mirror = tf.reshape(mirror, tf.concat([tf.shape(mirror), [1, 1, 1]], 0))
        return (tf.where(mirror, tf.reverse(images, axis=[-2]), images), *rest)

    return example_fn
