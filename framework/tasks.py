"""What a batch means: inputs, loss per example and metrics. The step in trainer.py stays generic.

A task is a small object with four methods (`prepare`, `forward`, `loss`, `update_metrics`) and a
list of metric names. `ClassificationTask` covers every image classifier; the triplet trainer has
its own task with the same four methods.
"""
import keras
import tensorflow as tf


class ClassificationTask:
    """Images and integer (or soft, after mixup/cutmix) labels -> logits, cross-entropy, accuracy."""

    metric_names = ("loss", "accuracy")

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0, augment=None, tta=None,
                 eval_transform=None):
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.augment = augment      # augment(images, labels, seed) -> (images, labels), runs on device
        self.tta = tta              # tta(model, images) -> logits, test-time augmentation at eval
        # eval_transform(images) -> images at evaluation, when `augment` changes the size (a centre crop)
        self.eval_transform = eval_transform

    @property
    def uses_seed(self) -> bool:
        """Whether `prepare` needs a random seed (the step skips making one otherwise)."""
        return self.augment is not None

    def make_metrics(self) -> dict[str, keras.metrics.Metric]:
        # Keras metrics are sync-on-read sums: each replica adds locally, reading sums replicas.
        return {name: keras.metrics.Mean(name=name) for name in self.metric_names}

    def prepare(self, batch, *, seed, training: bool):
        """uint8 [0, 255] -> float32 [0, 1] on the device, then the batch augmentation."""
        images, labels = batch[0], batch[1]
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        if training and self.augment is not None:
            images, labels = self.augment(images, labels, seed)
        elif not training and self.eval_transform is not None:
            images = self.eval_transform(images)
        return images, labels

    def forward(self, model, images, *, training: bool):
        if not training and self.tta is not None:
            return tf.cast(self.tta(model, images), tf.float32)
        return tf.cast(model(images, training=training), tf.float32)

    def loss(self, labels, logits):
        """Per-example cross-entropy in float32; labels may be class ids or probabilities."""
        if labels.shape.rank == 1 and self.label_smoothing == 0.0:
            return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        if labels.shape.rank == 1:
            labels = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
        return keras.losses.categorical_crossentropy(
            tf.cast(labels, tf.float32), logits, from_logits=True, label_smoothing=self.label_smoothing)

    def update_metrics(self, metrics, labels, logits, per_example_loss, sample_weight=None):
        true_class = labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1)
        correct = tf.cast(tf.equal(tf.cast(true_class, tf.int64), tf.argmax(logits, axis=-1)), tf.float32)
        metrics["loss"].update_state(per_example_loss, sample_weight=sample_weight)
        metrics["accuracy"].update_state(correct, sample_weight=sample_weight)
