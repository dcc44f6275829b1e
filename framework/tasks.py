"""What a batch means: inputs, loss per example and metrics. The step in trainer.py stays generic.

A task is a small object with four methods (`prepare`, `forward`, `loss`, `update_metrics`) and a
list of metric names. Three image tasks share `prepare` and `forward` and differ in their loss:

  ClassificationTask  logits of `num_classes`, softmax cross-entropy, accuracy        kind
                      "classification"
  BinaryTask          one logit, sigmoid binary cross-entropy, accuracy at p = 0.5    kind "binary"
  RegressionTask      one output, MSE or MAE of the label as a float, metric MAE      kind
                      "regression"

`task.kind` says which (code that reads per-class outputs skips the others), and `task.num_outputs`
is the width of the model's last layer. The triplet trainer has its own task with the same four
methods.

`TASKS` names them for `--task`: `TASKS.get(name).fn(num_classes, label_smoothing=..., loss=...,
**image_options)` makes one. An entry declares what goes with it: `classes` (the number of classes
it needs, binary: 2), `losses` (the --loss values it takes), `soft_labels` (mixup/cutmix labels
apply), `per_class` (label smoothing and per-class scores apply).
"""

import keras
import tensorflow as tf

from framework.registry import Registry

TASKS = Registry("task")

INPUT_RANGES = {"0,1": (0.0, 1.0), "-0.5,0.5": (-0.5, 0.5), "-1,1": (-1.0, 1.0)}


def _unit_float(images):
    """uint8 [0, 255] -> float32 [0, 1]; float images as they are."""
    return tf.cast(images, tf.float32) / 255.0 if images.dtype == tf.uint8 else images


class _ImageTask:
    """Images (uint8 or float in [0, 1]) -> the model's inputs, for every image task.

    `augment(images, labels, seed) -> (images, labels)` runs on the device in training;
    `eval_transform(images) -> images` at evaluation (crop_to's centre crop, --augment's normalize);
    `tta(model, images) -> outputs` is test-time augmentation at evaluation; `input_range` (lo, hi)
    maps the [0, 1] pixels to [lo, hi] after all of these, in training and evaluation alike."""

    kind = "image"
    metric_names = ("loss",)

    def __init__(self, *, augment=None, tta=None, eval_transform=None, input_range=(0.0, 1.0)):
        self.augment = augment
        self._augment = (
            None  # the augmentation as it runs, made at the first trace (cast_and_augment)
        )
        self.tta = tta
        self.eval_transform = eval_transform
        self.input_range = tuple(float(v) for v in input_range)
        if not self.input_range[0] < self.input_range[1]:
            raise ValueError(f"`input_range` ({input_range!r}) must be (low, high) with low < high")

    @property
    def uses_seed(self) -> bool:
        """Whether `prepare` needs a random seed (the step skips making one otherwise)."""
        return self.augment is not None

    def make_metrics(self) -> dict[str, keras.metrics.Metric]:
        # Keras metrics are sync-on-read sums: each replica adds locally, reading sums replicas.
        return {name: keras.metrics.Mean(name=name) for name in self.metric_names}

    def prepare(self, batch, *, seed, training: bool):
        """uint8 [0, 255] -> float32 [0, 1] on the device, the batch augmentation (training) or the
        evaluation transform, then the input range: the same pixels mean the same at train and
        eval."""
        images, labels = batch[0], batch[1]
        if training and self.augment is not None:
            images, labels = self.cast_and_augment(images, labels, seed)
        else:
            images = _unit_float(images)
            if not training and self.eval_transform is not None:
                images = self.eval_transform(images)
        return self.to_input_range(images), labels

    def cast_and_augment(self, images, labels, seed):
        """The cast to [0, 1] floats, then the augmentation: compiled as one XLA cluster where the
        policy offers it (augment's `Policy.compiled`). The cast stays outside: XLA divides by 255
        as a multiply, an ulp off TF's division."""
        if self._augment is None:
            compiled = getattr(self.augment, "compiled", None)
            self._augment = compiled() if compiled else self.augment
        return self._augment(_unit_float(images), labels, seed)

    def to_input_range(self, images):
        """[0, 1] pixels -> [low, high] (the identity for the default 0,1)."""
        low, high = self.input_range
        if (low, high) == (0.0, 1.0):
            return images
        return images * tf.cast(high - low, images.dtype) + tf.cast(low, images.dtype)

    def forward(self, model, images, *, training: bool):
        if not training and self.tta is not None:
            return tf.cast(self.tta(model, images), tf.float32)
        return tf.cast(model(images, training=training), tf.float32)


class ClassificationTask(_ImageTask):
    """Images and integer (or soft, after mixup/cutmix) labels -> logits, cross-entropy,
    accuracy."""

    kind = "classification"
    metric_names = ("loss", "accuracy")

    def __init__(self, num_classes: int, *, label_smoothing: float = 0.0, **image_options):
        super().__init__(**image_options)
        self.num_classes = self.num_outputs = num_classes
        self.label_smoothing = label_smoothing

    def loss(self, labels, logits):
        """Per-example cross-entropy in float32; labels may be class ids or probabilities."""
        if labels.shape.rank == 1 and self.label_smoothing == 0.0:
            return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        if labels.shape.rank == 1:
            labels = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
        return keras.losses.categorical_crossentropy(
            tf.cast(labels, tf.float32),
            logits,
            from_logits=True,
            label_smoothing=self.label_smoothing,
        )

    def update_metrics(self, metrics, labels, logits, per_example_loss, sample_weight=None):
        true_class = labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1)
        correct = tf.cast(
            tf.equal(tf.cast(true_class, tf.int64), tf.argmax(logits, axis=-1)), tf.float32
        )
        metrics["loss"].update_state(per_example_loss, sample_weight=sample_weight)
        metrics["accuracy"].update_state(correct, sample_weight=sample_weight)


class BinaryTask(_ImageTask):
    """Labels 0/1 (or, after mixup/cutmix, two-class probabilities) -> one logit per image, sigmoid
    binary cross-entropy, accuracy of `logit > 0` (p > 0.5)."""

    kind = "binary"
    metric_names = ("loss", "accuracy")
    num_outputs = 1

    def __init__(self, *, label_smoothing: float = 0.0, **image_options):
        super().__init__(**image_options)
        self.label_smoothing = label_smoothing

    @staticmethod
    def _positive_probability(labels):
        """P(label = 1) as float32 [B]: the label itself, or column 1 of two-class soft labels."""
        labels = tf.cast(labels, tf.float32)
        return labels[:, 1] if labels.shape.rank == 2 else labels

    def loss(self, labels, logits):
        target = self._positive_probability(labels)[:, None]
        return keras.losses.binary_crossentropy(
            target, logits, from_logits=True, label_smoothing=self.label_smoothing
        )

    def update_metrics(self, metrics, labels, logits, per_example_loss, sample_weight=None):
        truth = self._positive_probability(labels) > 0.5
        correct = tf.cast(tf.equal(truth, logits[:, 0] > 0.0), tf.float32)
        metrics["loss"].update_state(per_example_loss, sample_weight=sample_weight)
        metrics["accuracy"].update_state(correct, sample_weight=sample_weight)


class RegressionTask(_ImageTask):
    """The label as a float (e.g. the digit's value) -> one output per image; loss MSE or MAE; the
    metric `mae` (mean absolute error) whatever the loss."""

    kind = "regression"
    metric_names = ("loss", "mae")
    num_outputs = 1
    LOSSES = ("mse", "mae")

    def __init__(self, *, loss: str = "mse", **image_options):
        super().__init__(**image_options)
        if loss not in self.LOSSES:
            raise ValueError(f"`loss` ({loss!r}) must be one of {', '.join(self.LOSSES)}")
        self.loss_name = loss

    def loss(self, labels, outputs):
        error = outputs[:, 0] - tf.cast(labels, tf.float32)
        return tf.square(error) if self.loss_name == "mse" else tf.abs(error)

    def update_metrics(self, metrics, labels, outputs, per_example_loss, sample_weight=None):
        metrics["loss"].update_state(per_example_loss, sample_weight=sample_weight)
        metrics["mae"].update_state(
            tf.abs(outputs[:, 0] - tf.cast(labels, tf.float32)), sample_weight=sample_weight
        )


@TASKS.register("classification", soft_labels=True, per_class=True)
def classification(num_classes, *, label_smoothing=0.0, loss="", **image_options):
    return ClassificationTask(num_classes, label_smoothing=label_smoothing, **image_options)


@TASKS.register("binary", classes=2, soft_labels=True, per_class=True)
def binary(num_classes, *, label_smoothing=0.0, loss="", **image_options):
    return BinaryTask(label_smoothing=label_smoothing, **image_options)


@TASKS.register("regression", losses=RegressionTask.LOSSES)
def regression(num_classes, *, label_smoothing=0.0, loss="", **image_options):
    return RegressionTask(loss=loss or "mse", **image_options)
