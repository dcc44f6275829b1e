"""What a run leaves to look at: predictions.npz, per-class accuracy, several evaluation splits per
epoch, the step-0 evaluation and live curves, on a small real MNIST run."""

import json
import os

import numpy as np
import pytest

from trainers import recipes
from trainers.experiment import run_experiment


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """2 epochs of 8 steps (MLP, 512 train / 256 test examples), evaluating the test set's two
    halves at step 0 and each epoch end, with --plot and the flipped test set; a loop hook notes
    curves.png's mtime."""
    model_dir = str(tmp_path_factory.mktemp("outputs") / "run")
    exp, config = recipes.configs(
        "mnist",
        None,
        smoke=True,
        model="mlp",
        model_dir=model_dir,
        epochs=2,
        train_steps=0,
        eval_splits=("test_a", "test_b"),
        eval_at_start=True,
        plot=True,
        eval_transforms=("flip_ud",),
    )
    curves = os.path.join(model_dir, "curves.png")
    seen = []  # (step, mtime of curves.png) at each loop's end, before that loop's evaluation

    def hook(info):
        seen.append((info.step, os.path.getmtime(curves) if os.path.exists(curves) else None))

    result = run_experiment(exp, config, hooks=[hook])
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    return (
        result,
        history,
        dict(np.load(os.path.join(model_dir, "predictions.npz"))),
        seen,
        model_dir,
    )


@pytest.mark.slow
@pytest.mark.xdist_group("outputs_run")  # the module fixture trains once, on one worker
def test_predictions_match_result_and_per_class_accuracy_sums_to_it(run):
    result, _, predictions, _, model_dir = run
    logits, labels = predictions["logits"], predictions["labels"]
    assert logits.shape == (256, 10) and np.array_equal(predictions["indices"], np.arange(256))
    np.testing.assert_allclose(
        np.mean(logits.argmax(-1) == labels), result["test_accuracy"], atol=1e-6
    )
    np.testing.assert_allclose(
        np.mean(predictions["logits_flip_ud"].argmax(-1) == labels),
        result["test_flip_ud_accuracy"],
        atol=1e-6,
    )
    counts = np.asarray(result["per_class_examples"])
    assert counts.sum() == 256 and np.array_equal(counts, np.bincount(labels, minlength=10))
    for key, accuracy in (
        ("per_class_accuracy", "test_accuracy"),
        ("per_class_accuracy_flip_ud", "test_flip_ud_accuracy"),
    ):
        per_class = np.array([a if a is not None else 0.0 for a in result[key]])
        np.testing.assert_allclose(np.sum(per_class * counts) / 256, result[accuracy], atol=1e-6)
    assert result["per_class_accuracy"] != result["per_class_accuracy_flip_ud"]
    for name in ("confusion_matrix.png", "wrong_predictions.png"):
        assert os.path.getsize(os.path.join(model_dir, name)) > 1000


@pytest.mark.slow
@pytest.mark.xdist_group("outputs_run")
def test_two_eval_splits_per_epoch_and_an_untrained_row_at_step_0(run):
    result, history, _, _, _ = run
    assert history["epoch"] == [0, 1, 2] and history["step"] == [0, 8, 16]
    assert all(len(column) == 3 for column in history.values())
    assert (
        history["loss"][0] is None and history["loss"][1] is not None
    )  # no train steps before step 0
    for split in ("test_a", "test_b"):
        assert (
            history[f"{split}_accuracy"][0] < 0.25 < history[f"{split}_accuracy"][-1]
        )  # chance is 0.1
    assert history["test_a_loss"] != history["test_b_loss"]
    # The halves partition the test set: their mean is the whole set's accuracy (128 examples each).
    np.testing.assert_allclose(
        (result["test_a_accuracy"] + result["test_b_accuracy"]) / 2,
        result["test_accuracy"],
        atol=1e-6,
    )
    assert result["test_a_accuracy"] == history["test_a_accuracy"][-1]


@pytest.mark.slow
@pytest.mark.xdist_group("outputs_run")
def test_curves_are_rewritten_at_each_evaluation(run):
    _, _, _, seen, model_dir = run
    mtimes = dict(seen)
    assert mtimes[2] is not None  # the step-0 evaluation wrote it before the first loop ended
    assert mtimes[10] is not None and mtimes[10] > mtimes[2]  # epoch 1's evaluation rewrote it
    assert os.path.getmtime(os.path.join(model_dir, "curves.png")) > mtimes[10]  # and epoch 2's


@pytest.mark.slow
def test_predictions_and_transforms_of_a_test_set_streamed_from_files(tmp_path):
    """An image folder streamed from its files: predict, the wrong images' lookup, a half and a
    flipped copy all go through the split's own tf.data pipeline."""
    import tensorflow as tf

    import framework
    from framework.data.image_folder import list_image_folder
    from tests import engine_helpers as h
    from trainers import evaluation

    x, y, xt, yt = h.mnist_arrays()
    for split, images, labels in (("train", x[:128], y[:128]), ("test", xt[:40], yt[:40])):
        for i, (image, label) in enumerate(zip(images, labels)):
            os.makedirs(tmp_path / split / str(label), exist_ok=True)
            tf.io.write_file(
                str(tmp_path / split / str(label) / f"{i:03d}.png"), tf.io.encode_png(image)
            )
    splits = list_image_folder(str(tmp_path)).splits
    data = evaluation.with_eval_subsets(
        framework.Data(train=splits["train"], evals={"test": splits["test"]}), ("test_b",)
    )
    cfg = h.config(eval_splits=("test_b",), steps_per_loop=4)
    controller = framework.Controller(
        framework.build_trainer(cfg, data, model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()),
        data,
        cfg,
    )
    result = controller.run()
    found = controller.predict("test")
    assert len(found["logits"]) == 40 and result["test_b_accuracy"] != result["test_accuracy"]
    np.testing.assert_allclose(
        np.mean(found["logits"].argmax(-1) == found["labels"]), result["test_accuracy"], atol=1e-6
    )
    images, labels = evaluation.take_examples(data.evals["test"], [7, 0, 39])
    assert images.shape == (3, 28, 28, 1) and np.array_equal(labels, found["labels"][[7, 0, 39]])
    flipped = evaluation.transformed_accuracies(controller, data, ["flip_ud"])[
        "test_flip_ud_accuracy"
    ]
    logits = controller.predict("test_flip_ud")["logits"]
    np.testing.assert_allclose(np.mean(logits.argmax(-1) == found["labels"]), flipped, atol=1e-6)
    assert not np.allclose(logits, found["logits"])
