"""What the step and the controller report, and the controller's actions, on real MNIST."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import framework
from framework import ConfigError, actions, build_trainer, input_pipeline, prepare_runtime
from tests import engine_helpers as h

L2 = 1e-2


def make_trainer(cfg, data, model_fn=None, optimizer_fn=h.sgd):
    cfg = cfg.replace(
        steps_per_fetch=cfg.steps_per_fetch or 1
    )  # these tests drive run_train by hand
    return build_trainer(
        cfg,
        data,
        model_fn=model_fn or h.mlp_fn(),
        optimizer_fn=optimizer_fn,
        task=h.task(),
        strategy=prepare_runtime(cfg),
    )


def train_iterator(trainer, data, cfg):
    fn = input_pipeline.train_dataset_fn(
        data.train, global_batch_size=cfg.global_batch_size, seed=cfg.seed
    )
    return iter(trainer.strategy.distribute_datasets_from_function(fn))


def first_batch(data, cfg):
    """The images and labels of step 0 (the data order is a function of seed and epoch)."""
    order = input_pipeline.epoch_permutation(len(data.train[0]), cfg.seed, 0).numpy()[
        : cfg.global_batch_size
    ]
    return data.train[0][order].astype("float32") / 255.0, data.train[1][order]


def l2_model_fn():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                32,
                activation="relu",
                kernel_regularizer=keras.regularizers.L2(L2),
                kernel_initializer=keras.initializers.GlorotUniform(3),
            ),
            keras.layers.Dense(
                10,
                dtype="float32",
                kernel_regularizer=keras.regularizers.L2(L2),
                kernel_initializer=keras.initializers.GlorotUniform(4),
            ),
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_step_reports_reg_loss_global_grad_norm_and_lr_at_step_0(strategy):
    cfg = h.config(
        strategy=strategy, num_cpu_devices=2 if strategy == "mirrored" else 0, learning_rate=0.05
    )
    data = h.mnist_data()
    trainer = make_trainer(cfg, data, model_fn=l2_model_fn)
    kernels = [layer.kernel.numpy() for layer in trainer.model.layers[1:]]
    # By hand, on the same batch and the same initial weights: one replica, one tape.
    images, labels = first_batch(data, cfg)
    with tf.GradientTape() as tape:
        logits = trainer.model(images, training=True)
        data_loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
        loss = data_loss + tf.add_n(trainer.model.losses)
    expected_norm = float(
        tf.linalg.global_norm(tape.gradient(loss, trainer.model.trainable_variables))
    )

    trainer.train_loop_begin()
    trainer.run_train(train_iterator(trainer, data, cfg), 1)
    got = trainer.train_loop_end()
    assert trainer.strategy.num_replicas_in_sync == (2 if strategy == "mirrored" else 1)
    np.testing.assert_allclose(
        got["reg_loss"], L2 * sum(np.sum(k.astype(np.float64) ** 2) for k in kernels), rtol=1e-5
    )
    np.testing.assert_allclose(got["loss"], float(data_loss), rtol=1e-5)
    # The global gradient's norm: a per-replica norm (of half the batch's sum) would be about half
    # of it.
    np.testing.assert_allclose(got["grad_norm"], expected_norm, rtol=1e-4)
    np.testing.assert_allclose(got["learning_rate"], 0.05, rtol=1e-6)  # constant schedule
    assert "skipped_steps" not in got  # only with fp16


@pytest.mark.slow
def test_regularization_losses_are_summed_in_float32_under_bf16():
    # An activity regularizer on a bf16 layer gives a bf16 loss beside the kernels' float32 ones:
    # tf.add_n refuses the mix, and a bf16 sum would keep 3 digits.
    def model_fn():
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(
                    32,
                    activation="relu",
                    kernel_regularizer=keras.regularizers.L2(L2),
                    activity_regularizer=keras.regularizers.L2(1e-4),
                    kernel_initializer=keras.initializers.GlorotUniform(3),
                ),
                keras.layers.Dense(
                    10, dtype="float32", kernel_initializer=keras.initializers.GlorotUniform(4)
                ),
            ]
        )

    cfg, data = h.config(mixed_precision="bf16"), h.mnist_data()
    trainer = make_trainer(cfg, data, model_fn=model_fn)
    hidden = trainer.model.layers[1]
    assert hidden.compute_dtype == "bfloat16"
    images, _ = first_batch(data, cfg)
    activations = tf.nn.relu(
        images.reshape(len(images), -1) @ hidden.kernel.numpy() + hidden.bias.numpy()
    )
    expected = L2 * np.sum(hidden.kernel.numpy().astype(np.float64) ** 2) + 1e-4 * float(
        tf.reduce_sum(activations**2)
    )
    trainer.train_loop_begin()
    trainer.run_train(train_iterator(trainer, data, cfg), 1)
    np.testing.assert_allclose(
        trainer.train_loop_end()["reg_loss"], expected, rtol=2e-2
    )  # bf16 activations


def test_fp16_reports_loss_scale_and_counts_skipped_steps():
    cfg, data = h.config(mixed_precision="fp16"), h.mnist_data()
    trainer = make_trainer(cfg, data)
    iterator = train_iterator(trainer, data, cfg)
    trainer.train_loop_begin()
    trainer.run_train(iterator, 4)
    normal = trainer.train_loop_end()
    assert (
        normal["skipped_steps"] == 0 and normal["loss_scale"] == 2.0**15 and normal["grad_norm"] > 0
    )
    # A loss scale of 2**127 overflows float32: every gradient is Inf, the step is skipped and the
    # scale halves.
    trainer.optimizer.dynamic_scale.assign(2.0**127)
    before = h.weights(trainer.model)
    trainer.train_loop_begin()
    trainer.run_train(iterator, 1)
    forced = trainer.train_loop_end()
    assert forced["skipped_steps"] == 1 and forced["loss_scale"] == 2.0**126
    assert (
        forced["grad_norm"] == 0.0
    )  # a skipped step is left out of the mean norm (none was applied)
    for a, b in zip(before, h.weights(trainer.model)):
        np.testing.assert_array_equal(a, b)
    assert int(trainer.step.numpy()) == 5


# ---------------------------------------------------------------- per-loop metrics, epoch means,
# resume
@pytest.mark.slow
def test_loop_metrics_are_per_loop_and_history_rows_are_epoch_means(tmp_path):
    loops = []
    cfg = h.config(model_dir=str(tmp_path), epochs=2, steps_per_loop=16)
    framework.train(
        cfg,
        h.mnist_data(),
        model_fn=h.mlp_fn(),
        optimizer_fn=h.sgd,
        task=h.task(),
        hooks=[lambda info: loops.append((info.step, info.steps, dict(info.metrics)))],
    )
    assert [step for step, _, _ in loops] == [16, 32, 48, 64, 80, 96, 112, 128]
    # The same two loops by hand: each starts from zero (a running mean would carry loop 1 into loop
    # 2).
    trainer = make_trainer(cfg.replace(model_dir=None), h.mnist_data())
    iterator = train_iterator(trainer, h.mnist_data(), cfg)
    by_hand = []
    for _ in range(2):
        trainer.train_loop_begin()
        trainer.run_train(iterator, 16)
        by_hand.append(trainer.train_loop_end())
    for (_, _, seen), expected in zip(loops, by_hand):
        for name in ("loss", "accuracy", "grad_norm"):
            np.testing.assert_allclose(seen[name], expected[name], rtol=1e-5, err_msg=name)
    history = json.loads((tmp_path / "history.json").read_text())
    for row, epoch_loops in enumerate((loops[:4], loops[4:])):
        for name in ("loss", "accuracy", "grad_norm", "reg_loss"):
            mean = sum(m[name] * steps for _, steps, m in epoch_loops) / sum(
                steps for _, steps, _ in epoch_loops
            )
            np.testing.assert_allclose(history[name][row], mean, rtol=1e-6, err_msg=name)
        assert history["learning_rate"][row] == epoch_loops[-1][2]["learning_rate"]
    assert loops[3][2]["loss"] < 0.8 * loops[0][2]["loss"]
    # TensorBoard's train points are the loops' values (every epoch end is written).
    tensorboard = {}
    for event_file in sorted((tmp_path / "train").iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                tensorboard[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    for name in ("loss", "grad_norm", "reg_loss", "learning_rate"):
        np.testing.assert_allclose(
            tensorboard[(name, 128)], loops[-1][2][name], rtol=1e-6, err_msg=name
        )


@pytest.mark.slow
def test_resume_mid_epoch_gives_the_uninterrupted_history(tmp_path):
    def run(model_dir, hooks=()):
        cfg = h.config(model_dir=str(model_dir), epochs=3, checkpoint_every=16, deterministic=True)
        return framework.train(
            cfg,
            h.mnist_data(),
            model_fn=h.mlp_fn(),
            optimizer_fn=h.adam,
            task=h.task(),
            hooks=hooks,
        )

    run(tmp_path / "a")
    paused = run(
        tmp_path / "b", hooks=[lambda info: info.step >= 80]
    )  # step 80: a loop boundary in epoch 2
    assert paused["train_steps"] == 80 and paused["stop_reason"] == "hook"
    resumed = run(tmp_path / "b")
    assert resumed["train_steps"] == 192
    history_a = json.loads((tmp_path / "a" / "history.json").read_text())
    history_b = json.loads((tmp_path / "b" / "history.json").read_text())
    assert history_a.pop("wall_seconds") and history_b.pop("wall_seconds")
    assert history_a == history_b  # epoch 2's means include its loops from before the pause
    assert history_a["epoch"] == [1, 2, 3]


@pytest.mark.slow
def test_actions_resume_their_state_and_decide_as_if_never_stopped(tmp_path):
    # LR 1e-12: no evaluation improves on the first, so plateau halves the LR at every later one
    # and early stopping ends epoch 4. Paused after epoch 2, a run without the actions' saved state
    # would take epoch 3 as a new best (no halving, stop at epoch 5).
    def run(model_dir, hooks=()):
        cfg = h.config(
            model_dir=str(model_dir),
            epochs=10,
            learning_rate=1e-12,
            early_stopping_patience=3,
            reduce_lr_patience=1,
            global_batch_size=256,
        )
        return framework.train(
            cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task(), hooks=hooks
        )

    full = run(tmp_path / "a")
    run(tmp_path / "b", hooks=[lambda info: info.step >= 16])
    state = json.loads(
        tf.train.load_variable(
            tf.train.latest_checkpoint(tmp_path / "b" / "checkpoints"),
            "loop_state/.ATTRIBUTES/VARIABLE_VALUE",
        )
    )
    assert (
        set(state["controls"]) == {"best", "plateau", "early_stop"}
        and state["controls"]["early_stop"]["wait"] == 1
    )
    resumed = run(tmp_path / "b")
    assert resumed["stop_reason"] == full["stop_reason"] == "early_stopping"
    assert resumed["train_steps"] == full["train_steps"] == 32
    lrs = [json.loads((tmp_path / d / "history.json").read_text())["learning_rate"] for d in "ab"]
    np.testing.assert_allclose(np.array(lrs) / 1e-12, [[1, 1, 0.5, 0.25]] * 2, rtol=1e-5)


# ---------------------------------------------------------------- --target / --monitor names
@pytest.mark.slow
def test_target_on_a_train_metric_stops_at_the_epoch_that_meets_it(tmp_path):
    cfg = h.config(model_dir=str(tmp_path), epochs=20, target="loss<=0.3", eval_every_epochs=1)
    result = framework.train(
        cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert result["stop_reason"] == "target" and result["target_step"] == history["step"][-1]
    assert history["loss"][-1] <= 0.3 < min(history["loss"][:-1])
    assert len(history["loss"]) > 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            dict(target="los<=0.4"),
            r"--target='los<=0.4': 'los' is not a metric of this run; valid names: loss, "
            r"accuracy, reg_loss, grad_norm, learning_rate, test_loss, test_accuracy",
        ),
        (dict(monitor="val_accuracy"), r"--monitor='val_accuracy': 'val_accuracy' is not a metric"),
        (dict(target="skipped_steps<=1"), r"'skipped_steps' is not a metric"),  # fp16 only
        (
            dict(target="train_loss<=0.4"),
            r"train_loss is the training set evaluated \(add train to --eval_splits\), "
            r"loss the running mean of the epoch's train steps",
        ),
        (
            dict(eval_splits=("test", "val")),
            r"--eval_splits=test,val: no split 'val' in this run; valid: train, test",
        ),
    ],
)
def test_unknown_metric_in_target_or_monitor_is_refused_before_training(flags, message):
    cfg, data = h.config(**flags), h.mnist_data()
    trainer = make_trainer(cfg, data)
    with pytest.raises(ConfigError, match=message):
        framework.Controller(trainer, data, cfg)
    assert int(trainer.step.numpy()) == 0


@pytest.mark.slow
def test_train_split_evaluated_each_epoch_and_a_target_on_it(tmp_path):
    """--eval_splits=train,test: the training set evaluated (train_loss) beside the steps' running
    mean (loss); a target on train_loss stops the run at the first epoch that meets it."""
    cfg = h.config(
        model_dir=str(tmp_path), epochs=10, eval_splits=("train", "test"), target="train_loss<=0.35"
    )
    result = framework.train(
        cfg, h.mnist_data(train=1024), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert result["stop_reason"] == "target" and 1 < len(history["step"]) < 10
    assert history["train_loss"][-1] <= 0.35 < min(history["train_loss"][:-1])
    assert (
        history["train_loss"] != history["loss"]
        and history["train_accuracy"] != history["test_accuracy"]
    )
    assert (
        result["train_loss"] == history["train_loss"][-1]
    )  # the final evaluation reuses the last one


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
@pytest.mark.slow
def test_predict_returns_every_test_example_in_order(strategy):
    """500 test examples in batches of 32 (the last one padded), on 1 or 2 replicas: each row once,
    in the test set's order, and the logits give the evaluation's accuracy."""
    cfg = h.config(strategy=strategy, num_cpu_devices=2 if strategy == "mirrored" else 0)
    data = h.mnist_data(train=512, test=500)
    trainer = make_trainer(cfg, data)
    controller = framework.Controller(trainer, data, cfg)
    trainer.run_train(train_iterator(trainer, data, cfg), 8)
    found = controller.predict("test")
    assert np.array_equal(found["indices"], np.arange(500)) and np.array_equal(
        found["labels"], data.evals["test"][1]
    )
    images = data.evals["test"][0][:5].astype("float32") / 255.0
    np.testing.assert_allclose(
        found["logits"][:5], trainer.model(images, training=False), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        np.mean(found["logits"].argmax(-1) == found["labels"]),
        controller.evaluate("test")["test_accuracy"],
        atol=1e-6,
    )


# ---------------------------------------------------------------- the loop plan line
def test_loop_plan_says_why_steps_per_fetch_is_1():
    from framework.controller import loop_plan

    data = h.mnist_data()
    cifar_full = loop_plan(
        h.config(steps_per_loop=49), data, 48, 480, 1
    )  # batch 1024 on CIFAR's 50,000
    assert (
        "loops of up to 48 steps" in cifar_full and "steps_per_fetch: 1 (forced to 1:" in cifar_full
    )
    assert (
        "steps_per_loop 49, steps per epoch 48, total steps 480, whose greatest common divisor is 1"
        in cifar_full
    )
    host = loop_plan(
        h.config(), framework.Data(train=data.train, evals={}, host_fn=lambda *a: a), 64, 64, 1
    )
    assert "forced to 1: host augmentation" in host
    assert loop_plan(h.config(), data, 64, 64, 16).endswith("steps_per_fetch: 16 (automatic)")


def test_loop_plan_is_logged_once_per_run(caplog):
    caplog.set_level("INFO")
    framework.train(
        h.config(epochs=1), h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    lines = [r.getMessage() for r in caplog.records if "steps_per_fetch:" in r.getMessage()]
    assert lines == [
        "loops of up to 16 steps per compiled call (--steps_per_loop=16, 64 steps per epoch, 64 in "
        "all); steps_per_fetch: 16 (automatic)"
    ]


def test_a_signal_after_the_loops_decision_counts_at_the_next_loop():
    """The stop is decided once per loop (on several workers, by an all-reduce): a signal landing
    after that point, e.g. while the step's checkpoint is saved, must not stop this worker alone at
    this step."""
    signals = actions.Signals(strategy=None)
    signals.after_loop(None)
    signals.received = 15  # lands after the decision of this loop
    assert signals.decided is None
    signals.after_loop(None)
    assert signals.decided == 15
