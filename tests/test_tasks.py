"""The tasks beyond softmax classification (--task=binary, --task=regression) train with the same
step, and --input_range / --augment=normalize give the model the same pixels at training and
evaluation."""

import json

import numpy as np
import pytest
import tensorflow as tf

from framework import tasks
from trainers import recipes
from trainers.experiment import ExperimentConfig, make_task, run_experiment


def _history(model_dir):
    with open(model_dir / "history.json") as f:
        return json.load(f)


@pytest.mark.parametrize(
    "task, options, metric",
    [
        ("binary", dict(classes=(3, 5)), "test_accuracy"),
        ("regression", dict(loss="mse", learning_rate=3e-3, lr_schedule="constant"), "test_mae"),
    ],
)
@pytest.mark.slow
def test_binary_and_regression_tasks_learn_beyond_the_trivial_baseline(
    tmp_path, data_dir, mnist, task, options, metric
):
    exp, config = recipes.configs(
        "mnist",
        None,
        smoke=True,
        model="mlp",
        widths=(32,),
        task=task,
        train_steps=48,
        train_examples=2048,
        eval_at_start=True,
        data_dir=data_dir,
        model_dir=str(tmp_path),
        **options,
    )
    result = run_experiment(exp, config)
    history = _history(tmp_path)
    assert (
        history["step"][0] == 0 and history["test_loss"][-1] < 0.7 * history["test_loss"][0]
    )  # the loss falls
    if task == "binary":
        assert result["test_accuracy"] > 0.85  # the larger class alone: ~0.53
        with np.load(tmp_path / "predictions.npz") as found:
            assert found["logits"].shape[-1] == 1 and set(np.unique(found["labels"])) == {0, 1}
    else:
        labels = mnist.y_train.astype(np.float32)
        baseline = np.mean(
            np.abs(mnist.y_test - np.median(labels))
        )  # the best constant guess: ~2.5
        assert result["test_mae"] < 0.75 * baseline, (result["test_mae"], baseline)


def _prepared(task, images, training):
    return task.prepare(
        (images, tf.zeros([len(images)], tf.int32)), seed=tf.constant([1, 2]), training=training
    )[0]


@pytest.mark.parametrize(
    "spec",
    [
        dict(input_range="-1,1"),
        dict(input_range="-0.5,0.5"),
        dict(augment="normalize:mean=0.5,std=0.25"),
    ],
)
def test_input_range_and_normalize_give_the_same_pixels_at_train_and_eval(mnist, spec):
    images = tf.constant(mnist.x_test[:16])
    task, _ = make_task(ExperimentConfig(**spec), None, 10, images.shape[1:])
    train, evaluation = _prepared(task, images, True), _prepared(task, images, False)
    np.testing.assert_allclose(train.numpy(), evaluation.numpy(), atol=1e-6)
    low, high = {"-1,1": (-1, 1), "-0.5,0.5": (-0.5, 0.5)}.get(spec.get("input_range"), (-2, 2))
    assert float(tf.reduce_min(train)) == pytest.approx(low) and float(
        tf.reduce_max(train)
    ) == pytest.approx(high)


def test_task_kinds_and_output_widths():
    assert (tasks.ClassificationTask(10).kind, tasks.ClassificationTask(10).num_outputs) == (
        "classification",
        10,
    )
    assert (tasks.BinaryTask().kind, tasks.BinaryTask().num_outputs) == ("binary", 1)
    assert (tasks.RegressionTask(loss="mae").kind, tasks.RegressionTask().num_outputs) == (
        "regression",
        1,
    )
    # Binary cross-entropy of a logit against a 0/1 label, and of two-class soft labels (mixup).
    logits = tf.constant([[0.0], [2.0]])
    np.testing.assert_allclose(
        tasks.BinaryTask().loss(tf.constant([1, 0]), logits).numpy(),
        [np.log(2.0), np.log1p(np.exp(2.0))],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        tasks.BinaryTask().loss(tf.constant([[0.0, 1.0], [1.0, 0.0]]), logits).numpy(),
        [np.log(2.0), np.log1p(np.exp(2.0))],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        tasks.RegressionTask(loss="mae").loss(tf.constant([3, 1]), logits).numpy(), [3.0, 1.0]
    )


@pytest.mark.slow
def test_device_augmentation_compiles_builtin_policies_and_runs_your_own_ops_as_they_are():
    """Policies of augment.ops run as one XLA cluster in the step; an op of your own (here Python,
    which XLA cannot compile) runs as it is. Both give the policy's own pixels."""
    import augment

    builtin = augment.get_policy("flip,crop:padding=2", num_classes=10, image_shape=(8, 8, 3))

    def mirror(images, seed):  # a Python op: no XLA kernel
        out = tf.numpy_function(
            lambda x: np.ascontiguousarray(x[:, :, ::-1]), [images], tf.float32, stateful=False
        )
        return tf.ensure_shape(out, images.shape)

    mine = augment.compose([mirror], name="mine")
    assert builtin.compiles and not mine.compiles
    x = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)), tf.uint8)
    y, seed = tf.zeros([4], tf.int32), tf.constant([3, 4])
    for policy in (builtin, mine):
        task = tasks.ClassificationTask(10, augment=policy)
        images, _ = tf.function(lambda: task.prepare((x, y), seed=seed, training=True))()
        unit = tf.function(
            lambda: tf.cast(x, tf.float32) / 255.0
        )()  # as in a step (graph, not eager, division)
        expected, _ = tf.function(lambda: policy(unit, y, seed))()
        np.testing.assert_array_equal(images, expected)
        assert not np.array_equal(images, unit)
