"""Evaluation extras: accuracy on transformed test sets, named subsets of the evaluation splits, the
test set's predictions (predictions.npz, per-class accuracy, confusion matrix, the most confidently
wrong images), and augmentation moved to the host pipeline."""

import dataclasses
import re

import numpy as np
import tensorflow as tf

from augment import step_seed
from framework import ConfigError, input_pipeline
from framework.checkpointing import atomic_write
from trainers import plots

# Batch transforms of [N, H, W, C] images (uint8 or float in [0, 1]), as TensorFlow ops so that a
# streamed test set is transformed in its tf.data pipeline like an in-memory one.
TRANSFORMS = {
    "flip_ud": lambda x: tf.reverse(x, axis=[1]),
    "flip_lr": lambda x: tf.reverse(x, axis=[2]),
    "rot90": lambda x: tf.image.rot90(x, k=1),  # counter-clockwise, as np.rot90(x, 1, axes=(1, 2))
    "invert": lambda x: 255 - x if x.dtype == tf.uint8 else 1.0 - x,
}
_HALF = re.compile(r"^(.+)_([ab])$")


def transformed_accuracies(controller, data, names) -> dict[str, float]:
    """`test_<name>_accuracy` for each transform of the test set (the model is not retrained); the
    transformed sets stay in data.evals as `test_<name>` (for predictions)."""
    found = {}
    for name in names:
        data.evals[f"test_{name}"] = transformed(data.evals["test"], name)
        metrics = controller.evaluate(f"test_{name}")
        found[f"test_{name}_accuracy"] = metrics[f"test_{name}_accuracy"]
    return found


def transformed(source, name: str):
    """The split with TRANSFORMS[name] applied to its images: arrays, or a streamed source
    mapped."""
    if isinstance(source, input_pipeline.StreamedSource):
        return _TransformedStream(source, TRANSFORMS[name])
    images = source[0]
    x = TRANSFORMS[name](tf.constant(images)).numpy()
    if x.shape != images.shape:  # rot90 of a non-square image (check_for_data refuses it first)
        raise ConfigError(
            f"--eval_transforms={name}: changes the image shape {images.shape[1:]} -> "
            f"{x.shape[1:]}; use square images"
        )
    return (x, *source[1:])


class _TransformedStream(input_pipeline.StreamedSource):
    """A streamed evaluation split whose images pass through `transform` in its tf.data pipeline."""

    def __init__(self, inner, transform):
        self.inner, self.transform = inner, transform
        self.num_examples, self.example_spec = inner.num_examples, inner.example_spec

    def train_dataset_fn(self, **kwargs):
        raise NotImplementedError("a transformed split is for evaluation only")

    def eval_dataset_fn(self, *, global_batch_size: int):
        fn, num_batches = self.inner.eval_dataset_fn(global_batch_size=global_batch_size)

        def dataset_fn(ctx):
            return fn(ctx).map(lambda images, *rest: (self.transform(images), *rest))

        return dataset_fn, num_batches

    def head(self, n: int):
        images, *rest = self.inner.head(n)
        return (self.transform(tf.constant(images)).numpy(), *rest)


def with_eval_subsets(data, splits):
    """Data whose evals also hold the named subsets --eval_splits asks for: `<split>_a` and
    `<split>_b`, the first and second half of `<split>` (test_a, test_b: the test set's halves); the
    rest is unchanged."""
    added = {}
    for name in splits:
        match = _HALF.match(name)
        if name in data.evals or name == "train" or not match:
            continue  # the controller refuses a name that is no split
        base, half = match.groups()
        source = data.train if base == "train" else data.evals.get(base)
        if source is None:
            continue
        middle, total = (
            input_pipeline.num_examples(source) // 2,
            input_pipeline.num_examples(source),
        )
        rows = np.arange(0, middle) if half == "a" else np.arange(middle, total)
        if not isinstance(source, input_pipeline.StreamedSource):
            added[name] = tuple(array[rows] for array in source)
        elif hasattr(source, "subset"):  # an image folder's files: the listed files of that half
            added[name] = source.subset(rows)
        else:
            raise ConfigError(
                f"--eval_splits={name}: this streamed {base} split cannot be halved; "
                f"evaluate {base} whole"
            )
    return dataclasses.replace(data, evals={**data.evals, **added}) if added else data


# ---------------------------------------------------------------- predictions
def write_predictions(
    controller, task, transforms=(), *, class_names=None, plot: bool = False, wrong_images: int = 24
) -> dict:
    """The test set's predictions, on every worker (the chief writes): model_dir/predictions.npz
    with `logits`, `labels`, `indices` (the row's position in the test set) and `logits_<transform>`
    for each --eval_transforms; for a classification task, result entries `per_class_accuracy` (a
    list by class id, None for a class without test examples), `per_class_examples` and
    `per_class_accuracy_<transform>`; with `plot`, confusion_matrix.png and wrong_predictions.png
    (the most confidently wrong test images). Returns the result entries."""
    found = controller.predict("test")
    arrays = {"logits": found["logits"], "labels": found["labels"], "indices": found["indices"]}
    for name in transforms:
        arrays[f"logits_{name}"] = controller.predict(f"test_{name}")["logits"]
    entries = {}
    writer = controller.writer
    if writer.model_dir:
        with atomic_write(
            writer.path("predictions.npz")
        ) as tmp:  # a full disk: one line, no half file
            np.savez_compressed(tmp, **arrays)
        entries["predictions_file"] = writer.path("predictions.npz")
    if getattr(task, "kind", "classification") != "classification":
        return entries  # a binary or regression task: predictions only, no classes
    labels, num_classes = class_ids(arrays["labels"]), arrays["logits"].shape[-1]
    accuracy, counts = per_class_accuracy(labels, arrays["logits"].argmax(-1), num_classes)
    entries.update(per_class_accuracy=accuracy, per_class_examples=counts)
    for name in transforms:
        entries[f"per_class_accuracy_{name}"] = per_class_accuracy(
            labels, arrays[f"logits_{name}"].argmax(-1), num_classes
        )[0]
    if plot and writer.model_dir:
        predicted = arrays["logits"].argmax(-1)
        plots.write_confusion_matrix(
            writer.model_dir, confusion_matrix(labels, predicted, num_classes), class_names
        )
        entries["confusion_matrix_file"] = writer.path("confusion_matrix.png")
        wrong = most_confidently_wrong(arrays["logits"], labels, wrong_images)
        if len(wrong):
            images = take_examples(controller.data.evals["test"], found["indices"][wrong])[0]
            if task.eval_transform is not None:  # crop_to: show what the model saw
                images = np.asarray(task.eval_transform(tf.constant(images)))
            name = (lambda c: class_names[c]) if class_names is not None else str
            probs = softmax(arrays["logits"][wrong])
            titles = [
                f"true {name(labels[i])}\npred {name(predicted[i])} ({p.max():.2f})"
                for i, p in zip(wrong, probs)
            ]
            plots.write_image_grid(
                writer.model_dir,
                images,
                titles,
                "wrong_predictions.png",
                f"the {len(wrong)} most confidently wrong test images (of "
                f"{int((predicted != labels).sum())} wrong)",
            )
            entries["wrong_predictions_file"] = writer.path("wrong_predictions.png")
    return entries


def class_ids(labels: np.ndarray) -> np.ndarray:
    """Integer class ids from class ids or one-hot / probability rows."""
    return labels.argmax(-1) if labels.ndim > 1 else labels.astype(np.int64)


def per_class_accuracy(labels: np.ndarray, predicted: np.ndarray, num_classes: int):
    """(accuracy per class id, None where the class has no example; examples per class)."""
    counts = np.bincount(labels, minlength=num_classes)
    right = np.bincount(labels[predicted == labels], minlength=num_classes)
    return [float(r / n) if n else None for r, n in zip(right, counts)], [int(n) for n in counts]


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(
        num_classes, -1
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def most_confidently_wrong(logits: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Rows the model got wrong, by the probability it gave its (wrong) answer, highest first."""
    wrong = np.nonzero(logits.argmax(-1) != labels)[0]
    confidence = softmax(logits[wrong]).max(-1)
    return wrong[np.argsort(-confidence, kind="stable")[:count]]


def take_examples(source, indices) -> tuple[np.ndarray, ...]:
    """The examples at these positions of a split: arrays indexed, or a streamed split read in one
    pass."""
    indices = np.asarray(indices)
    if not isinstance(source, input_pipeline.StreamedSource):
        return tuple(array[indices] for array in source)
    fn, _ = source.eval_dataset_fn(global_batch_size=256)
    wanted, found, position = set(indices.tolist()), {}, 0
    for batch in fn(tf.distribute.InputContext()):
        *parts, _weight = (t.numpy() for t in batch)
        for row in range(len(parts[0])):
            if position + row in wanted:
                found[position + row] = tuple(p[row] for p in parts)
        position += len(parts[0])
        if position >= source.num_examples:
            break
    return tuple(np.stack([found[i][k] for i in indices]) for k in range(len(found[indices[0]])))


def host_augment_fn(policy, seed: int):
    """Run `policy` in the tf.data map (CPU) with the same per-(step, replica) seeds as on the
    device, and compiled as there (`Policy.compiled`): the same pixels."""
    run = policy.compiled() if hasattr(policy, "compiled") else policy

    def host_fn(batch, step, replica_id):
        images, labels = batch[0], batch[1]
        images = tf.cast(images, tf.float32) / 255.0
        return run(images, labels, step_seed(seed, step, replica_id))

    return host_fn
