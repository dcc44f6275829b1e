"""The engine's invariants on real MNIST: compiled loops, replicas, scaling, precision, controls."""

import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import framework
from framework import (
    ConfigError,
    NonFiniteLossError,
    TrainConfig,
    build_trainer,
    input_pipeline,
    prepare_runtime,
    schedules,
)
from tests import engine_helpers as h


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


def train_iterator(trainer, data, cfg, start_step=0):
    fn = input_pipeline.train_dataset_fn(
        data.train, global_batch_size=cfg.global_batch_size, seed=cfg.seed, start_step=start_step
    )
    return iter(trainer.strategy.distribute_datasets_from_function(fn))


@pytest.mark.slow
def test_loops_trace_once_over_many_calls():
    cfg, data = h.config(), h.mnist_data()
    trainer = make_trainer(cfg, data)
    iterator = train_iterator(trainer, data, cfg)
    for num_steps in [1, 5, 16, 3] * 5:
        trainer.run_train(iterator, num_steps)
    fn, num_batches = input_pipeline.eval_dataset_fn(data.evals["test"], global_batch_size=64)
    eval_iterator = iter(trainer.strategy.distribute_datasets_from_function(fn))
    results = [trainer.evaluate(eval_iterator, num_batches) for _ in range(3)]
    assert trainer.trace_counts() == {"train_loop": 1, "eval_loop": 1}
    assert int(trainer.step.numpy()) == 25 * 5
    assert results[0] == results[2]  # the eval stream restarts cleanly at each pass
    assert results[0]["accuracy"] > 0.6


def test_n_steps_per_call_equals_one_step_per_call():
    cfg, data = h.config(), h.mnist_data()
    one_call, many_calls = (
        make_trainer(cfg, data, optimizer_fn=h.adam),
        make_trainer(cfg, data, optimizer_fn=h.adam),
    )
    it1, it2 = train_iterator(one_call, data, cfg), train_iterator(many_calls, data, cfg)
    one_call.run_train(it1, 40)
    for _ in range(40):
        many_calls.run_train(it2, 1)
    np.testing.assert_allclose(
        one_call.train_results()["loss"], many_calls.train_results()["loss"], rtol=1e-6
    )
    for a, b in zip(h.weights(one_call.model), h.weights(many_calls.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_several_steps_per_fetch_change_nothing():
    """K batches per next(iterator) (chunks split per replica) train exactly like one per next()."""
    data, found = h.mnist_data(), {}
    for strategy, fetch in (("default", 1), ("default", 8), ("mirrored", 1), ("mirrored", 4)):
        cfg = h.config(
            strategy=strategy,
            num_cpu_devices=2 if strategy == "mirrored" else 0,
            steps_per_fetch=fetch,
            epochs=2,
            steps_per_loop=16,
        )
        trainer = build_trainer(
            cfg,
            data,
            model_fn=h.mlp_fn(),
            optimizer_fn=h.sgd,
            task=h.task(),
            strategy=prepare_runtime(cfg),
        )
        assert trainer.steps_per_fetch == fetch
        framework.Controller(trainer, data, cfg).run()
        assert trainer.trace_counts()["train_loop"] == 1
        found[(strategy, fetch)] = h.weights(trainer.model)
    for one, key in [
        (("default", 1), ("default", 8)),
        (("mirrored", 1), ("mirrored", 4)),
        (("default", 1), ("mirrored", 4)),
    ]:
        for a, b in zip(found[one], found[key]):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{one} vs {key}")


def test_automatic_steps_per_fetch_divides_every_loop():
    from framework.run import steps_per_fetch

    data = h.mnist_data()
    assert steps_per_fetch(TrainConfig(steps_per_loop=500), data, 1875, 3750) == 125
    assert (
        steps_per_fetch(TrainConfig(steps_per_loop=500, checkpoint_every=100), data, 1875, 3750)
        == 25
    )
    assert (
        steps_per_fetch(TrainConfig(steps_per_loop=500, global_batch_size=8192), data, 1875, 3750)
        == 1
    )
    assert steps_per_fetch(TrainConfig(steps_per_loop=500), data, 97, 679) == 1
    with pytest.raises(ConfigError, match="--steps_per_fetch=16 must divide"):
        steps_per_fetch(TrainConfig(steps_per_fetch=16), data, 1875, 3750)


def _train_weights(strategy, model_fn, steps=30, batch=32, optimizer_fn=h.sgd, **cfg_overrides):
    cfg = h.config(
        strategy=strategy,
        num_cpu_devices=2 if strategy == "mirrored" else 0,
        global_batch_size=batch,
        **cfg_overrides,
    )
    data = h.mnist_data()
    trainer = make_trainer(cfg, data, model_fn=model_fn, optimizer_fn=optimizer_fn)
    trainer.run_train(train_iterator(trainer, data, cfg), steps)
    return trainer, h.weights(trainer.model)


def test_two_replicas_equal_one_replica_mlp():
    one, w1 = _train_weights("default", h.mlp_fn())
    two, w2 = _train_weights("mirrored", h.mlp_fn())
    assert two.strategy.num_replicas_in_sync == 2
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(one.train_results()["loss"], two.train_results()["loss"], rtol=1e-5)


@pytest.mark.slow
def test_two_replicas_equal_one_with_sync_batchnorm_only():
    # lr 0.01: at 0.05 the float rounding of E[x^2]-E[x]^2 (sync) vs the direct variance grows to
    # 5e-5.
    _, w1 = _train_weights("default", h.bn_cnn_fn(sync=False), steps=20, learning_rate=0.01)
    _, w2 = _train_weights("mirrored", h.bn_cnn_fn(sync=True), steps=20, learning_rate=0.01)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Per-replica statistics (Keras' default) see half the batch: the runs really differ.
    _, w3 = _train_weights("mirrored", h.bn_cnn_fn(sync=False), steps=20, learning_rate=0.01)
    assert max(np.abs(a - b).max() for a, b in zip(w1, w3)) > 1e-4


def test_lookahead_averages_the_weights_at_its_steps():
    # By hand: after step 4 (every=2, 8 steps in all) rho = 0.9**2 * (4/8)**3; weights become the
    # average.
    from framework.lookahead import Lookahead

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    look = Lookahead(model, every=2, decay=0.9, total_steps=8)
    model.layers[0].kernel.assign([[3.0], [5.0]])
    look.maybe_update(tf.constant(3, tf.int64))  # not a multiple of 2: nothing happens
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), [[3.0], [5.0]])
    look.maybe_update(tf.constant(4, tf.int64))
    rho = 0.81 * 0.125
    expected = [[rho * 1 + (1 - rho) * 3], [rho * 1 + (1 - rho) * 5]]
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(look.averages[0].numpy(), expected, rtol=1e-6)


@pytest.mark.slow
def test_lookahead_on_two_replicas_equals_one_and_changes_the_run():
    kwargs = dict(steps=20, learning_rate=0.01, lookahead_every=5, epochs=0, train_steps=20)
    _, w1 = _train_weights("default", h.bn_cnn_fn(sync=True), **kwargs)
    two, w2 = _train_weights("mirrored", h.bn_cnn_fn(sync=True), **kwargs)
    for a, b in zip(w1, w2):  # BatchNorm's moving statistics too
        np.testing.assert_allclose(a, b, atol=1e-5)
    for weight, average in zip(two.lookahead.weights, two.lookahead.averages):
        np.testing.assert_array_equal(weight.numpy(), average.numpy())  # step 20 was an update
    _, w0 = _train_weights("default", h.bn_cnn_fn(sync=True), **{**kwargs, "lookahead_every": 0})
    assert max(np.abs(a - b).max() for a, b in zip(w0, w1)) > 1e-4


def test_one_device_strategy_equals_default():
    _, w1 = _train_weights("default", h.mlp_fn(), steps=10)
    trainer, w2 = _train_weights("one_device", h.mlp_fn(), steps=10)
    assert isinstance(trainer.strategy, tf.distribute.OneDeviceStrategy)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_regularization_loss_counted_once_across_replicas():
    def model_fn():
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(
                    10,
                    kernel_regularizer=keras.regularizers.L2(1e-2),
                    kernel_initializer=keras.initializers.GlorotUniform(3),
                ),
            ]
        )

    _, w1 = _train_weights("default", model_fn, steps=15)
    _, w2 = _train_weights("mirrored", model_fn, steps=15)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_regularization_enters_the_step_exactly_once(strategy):
    """One plain-SGD step with and without an L2(c) kernel regularizer, from the same weights and
    batch: the kernels must differ by exactly -lr * 2c * W0 (the L2 term's gradient). Dropping
    model.losses gives 0, counting it once per replica gives twice that."""
    c, lr = 0.05, 0.1

    def model_fn(regularizer):
        return lambda: keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(
                    10,
                    kernel_regularizer=regularizer,
                    kernel_initializer=keras.initializers.GlorotUniform(3),
                ),
            ]
        )

    plain_sgd = lambda learning_rate: keras.optimizers.SGD(learning_rate)  # noqa: E731
    w0_kernel = h.weights(model_fn(None)())[0]
    _, (plain_kernel, plain_bias) = _train_weights(
        strategy, model_fn(None), steps=1, learning_rate=lr, optimizer_fn=plain_sgd
    )
    _, (l2_kernel, l2_bias) = _train_weights(
        strategy,
        model_fn(keras.regularizers.L2(c)),
        steps=1,
        learning_rate=lr,
        optimizer_fn=plain_sgd,
    )
    np.testing.assert_allclose(l2_kernel - plain_kernel, -lr * 2 * c * w0_kernel, atol=2e-6)
    np.testing.assert_allclose(l2_bias, plain_bias, atol=1e-7)  # the bias is not regularized


def test_global_batch_must_divide_by_replicas():
    with pytest.raises(ConfigError, match="not divisible by the 2 replicas"):
        prepare_runtime(h.config(strategy="mirrored", num_cpu_devices=2, global_batch_size=33))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_float32_logits(precision):
    cfg, data = h.config(mixed_precision=precision, learning_rate=0.05), h.mnist_data()
    trainer = make_trainer(cfg, data)
    assert (
        trainer.model.layers[0].compute_dtype == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    )
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == (
        precision == "fp16"
    )
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    iterator = train_iterator(trainer, data, cfg)
    trainer.run_train(iterator, 10)
    first = trainer.train_results()["loss"]
    trainer.reset_train_metrics()
    trainer.run_train(iterator, 54)
    assert trainer.train_results()["loss"] < 0.6 * first
    assert trainer.model(data.train[0][:4].astype("float32")).dtype == tf.float32


@pytest.mark.slow
def test_jit_compile_trains():
    cfg, data = h.config(jit_compile=True), h.mnist_data()
    trainer = make_trainer(cfg, data)
    trainer.run_train(train_iterator(trainer, data, cfg), 64)
    assert trainer.train_results()["accuracy"] > 0.5


def test_tpu_strategy_fails_fast_without_tpu():
    start = time.time()
    with pytest.raises(ConfigError, match="no TPU found"):
        prepare_runtime(h.config(strategy="tpu"))
    assert time.time() - start < 5


def test_schedule_values_at_known_steps():
    def values(sched, steps):
        return [float(sched(tf.constant(s))) for s in steps]

    cfg = lambda **kw: TrainConfig(learning_rate=0.1, **kw)  # noqa: E731
    assert schedules.build_schedule(cfg(lr_schedule="constant"), 100) == 0.1
    exp = schedules.build_schedule(
        cfg(lr_schedule="exponential", decay_rate=0.5, decay_steps=10), 100
    )
    np.testing.assert_allclose(values(exp, [0, 10, 20]), [0.1, 0.05, 0.025], rtol=1e-6)
    cos = schedules.build_schedule(cfg(lr_schedule="cosine", warmup_steps=10), 110)
    np.testing.assert_allclose(
        values(cos, [0, 5, 10, 60, 110]), [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6
    )
    one = schedules.build_schedule(cfg(lr_schedule="onecycle", warmup_steps=25), 100)
    np.testing.assert_allclose(
        values(one, [0, 25, 50, 100, 200]), [0.0, 0.1, 0.1 * 50 / 75, 0.0, 0.0], atol=1e-6
    )
    # airbench's triangle: from 0.2 x peak up to the peak, down to 0.07 x peak.
    tri = schedules.build_schedule(
        cfg(lr_schedule="onecycle", warmup_steps=25, onecycle_start=0.2, onecycle_end=0.07), 100
    )
    np.testing.assert_allclose(
        values(tri, [0, 10, 25, 100, 200]), [0.02, 0.052, 0.1, 0.007, 0.007], atol=1e-6
    )
    scale = tf.Variable(0.5)
    np.testing.assert_allclose(values(schedules.Scaled(one, scale), [25]), [0.05], rtol=1e-6)


def test_bad_config_values_name_the_flag():
    with pytest.raises(ConfigError, match="--strategy='gpu'.*valid choices: default"):
        TrainConfig(strategy="gpu")
    with pytest.raises(ConfigError, match="--global_batch_size=0"):
        TrainConfig(global_batch_size=0)
    with pytest.raises(ConfigError, match="--target='acc=0.9'"):
        TrainConfig(target="acc=0.9")
    with pytest.raises(ConfigError, match="--eval_every_epochs=-1"):
        TrainConfig(eval_every_epochs=-1)
    with pytest.raises(
        ConfigError, match="--onecycle_start/--onecycle_end need --lr_schedule=onecycle"
    ):
        TrainConfig(lr_schedule="cosine", onecycle_end=0.1)
    with pytest.raises(ConfigError, match="--lookahead_every=-5"):
        TrainConfig(lookahead_every=-5)
    with pytest.raises(ConfigError, match="--lookahead_decay=1.0: must be in \\[0, 1\\)"):
        TrainConfig(lookahead_every=5, lookahead_decay=1.0)
    with pytest.raises(ConfigError, match="--onecycle_end=1.5"):
        TrainConfig(lr_schedule="onecycle", onecycle_end=1.5)


def test_nan_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    cfg = h.config(model_dir=str(tmp_path), checkpoint_every=16, epochs=2)
    model_fn = h.mlp_fn(extra_layers=lambda: [h.PoisonAfter(at=40)])
    with pytest.raises(NonFiniteLossError, match="between step 33 and step 48"):
        framework.train(cfg, h.mnist_data(), model_fn=model_fn, optimizer_fn=h.sgd, task=h.task())
    latest = tf.train.latest_checkpoint(tmp_path / "checkpoints")
    assert latest.endswith("ckpt-32")
    kernel = [n for n, _ in tf.train.list_variables(latest) if n.startswith("model_variables/0/")][
        0
    ]
    assert np.all(np.isfinite(tf.train.load_variable(latest, kernel)))
    assert not (tmp_path / "result.json").exists()


@pytest.mark.slow
def test_outputs_history_result_tensorboard_and_export(tmp_path):
    cfg = h.config(
        model_dir=str(tmp_path), epochs=2, export=True, lr_schedule="cosine", warmup_steps=8
    )
    result = framework.train(
        cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.adam, task=h.task()
    )
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epoch"] == [1, 2] and len(history["test_accuracy"]) == 2
    assert history["loss"][1] < history["loss"][0]
    saved = json.loads((tmp_path / "result.json").read_text())
    for key in (
        "test_loss",
        "test_accuracy",
        "train_steps",
        "examples_per_sec",
        "wall_seconds",
        "strategy",
        "num_replicas",
        "config",
        "trainable_params",
        "non_trainable_params",
    ):
        assert key in saved, key
    assert (
        saved["train_steps"] == 128 and saved["test_accuracy"] > 0.7 and result["num_replicas"] == 1
    )
    assert saved["trainable_params"] == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    # TensorBoard holds what history.json holds: the same evaluations at the same steps.
    scalars = {split: _tensorboard_scalars(tmp_path / split) for split in ("train", "eval")}
    assert [s for s, _ in scalars["eval"]["test_accuracy"]] == history["step"] == [64, 128]
    np.testing.assert_allclose(
        [v for _, v in scalars["eval"]["test_accuracy"]], history["test_accuracy"], rtol=1e-6
    )
    np.testing.assert_allclose(
        [v for _, v in scalars["eval"]["test_loss"]], history["test_loss"], rtol=1e-6
    )
    train_steps = [s for s, _ in scalars["train"]["loss"]]
    assert train_steps[-1] == 128 and {64, 128} <= set(train_steps)
    learning_rates = dict(scalars["train"]["learning_rate"])
    assert learning_rates[128] < 0.01 * learning_rates[64]  # the cosine schedule reached its end
    model = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    x = h.mnist_data().evals["test"][0][:64].astype("float32") / 255.0
    logits = model.predict(x, verbose=0)
    accuracy = np.mean(np.argmax(logits, -1) == h.mnist_data().evals["test"][1][:64])
    assert accuracy > 0.6
    # The SavedModel serves the same function as the .keras model.
    saved_model = tf.saved_model.load(
        str(tmp_path / "saved_model")
    )  # held: serve() needs its variables
    served = saved_model.serve(tf.constant(x))
    np.testing.assert_allclose(served.numpy(), logits, rtol=1e-5, atol=1e-5)


def _tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from the event files of one TensorBoard run directory."""
    found = {}
    for name in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(str(log_dir / name)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor)))
                )
    return found


@pytest.mark.parametrize("lookahead_every", [0, 3])
@pytest.mark.slow
def test_resume_after_stop_equals_uninterrupted(tmp_path, lookahead_every):
    def cfg(d):
        return h.config(
            model_dir=str(d),
            epochs=3,
            checkpoint_every=16,
            deterministic=True,
            lookahead_every=lookahead_every,
        )

    model_fn = h.mlp_fn(extra_layers=lambda: [keras.layers.Dropout(0.2, seed=5)])
    full = framework.train(
        cfg(tmp_path / "a"), h.mnist_data(), model_fn=model_fn, optimizer_fn=h.adam, task=h.task()
    )
    stop_at_80 = lambda info: info.step >= 80  # noqa: E731  (a hook asking to stop)
    framework.train(
        cfg(tmp_path / "b"),
        h.mnist_data(),
        model_fn=model_fn,
        optimizer_fn=h.adam,
        task=h.task(),
        hooks=[stop_at_80],
    )
    resumed = framework.train(
        cfg(tmp_path / "b"), h.mnist_data(), model_fn=model_fn, optimizer_fn=h.adam, task=h.task()
    )
    assert resumed["train_steps"] == full["train_steps"] == 192
    assert resumed["test_accuracy"] == full["test_accuracy"]
    a = tf.train.latest_checkpoint(tmp_path / "a" / "checkpoints")
    b = tf.train.latest_checkpoint(tmp_path / "b" / "checkpoints")
    for name, _ in tf.train.list_variables(a):
        if name.startswith(("model_variables", "optimizer", "lookahead")):
            np.testing.assert_array_equal(
                tf.train.load_variable(a, name), tf.train.load_variable(b, name)
            )
    history_a = json.loads((tmp_path / "a" / "history.json").read_text())
    history_b = json.loads((tmp_path / "b" / "history.json").read_text())
    assert history_a["test_accuracy"] == history_b["test_accuracy"]


def test_resume_refuses_a_different_model(tmp_path):
    cfg = h.config(model_dir=str(tmp_path), train_steps=16)
    framework.train(cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task())
    with pytest.raises(framework.checkpointing.CheckpointError, match="different configuration"):
        # The same configuration (framework.run_record refuses another one first), another model_fn.
        framework.train(
            cfg, h.mnist_data(), model_fn=h.mlp_fn(widths=(32,)), optimizer_fn=h.sgd, task=h.task()
        )


@pytest.mark.slow
def test_early_stopping_plateau_and_best_checkpoint(tmp_path):
    # A learning rate this small cannot move the test accuracy: every evaluation is "no
    # improvement".
    cfg = h.config(
        model_dir=str(tmp_path),
        epochs=10,
        learning_rate=1e-12,
        early_stopping_patience=3,
        reduce_lr_patience=1,
        reduce_lr_factor=0.5,
        global_batch_size=256,
    )
    result = framework.train(
        cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    assert result["stop_reason"] == "early_stopping"
    assert result["train_steps"] == 4 * 8  # epoch 1 sets the best, epochs 2-4 wait
    history = json.loads((tmp_path / "history.json").read_text())
    np.testing.assert_allclose(
        np.array(history["learning_rate"]) / 1e-12, [1, 1, 0.5, 0.25], rtol=1e-5
    )
    assert tf.train.latest_checkpoint(tmp_path / "best").endswith("ckpt-8")
    # A resumed early-stopped run stays stopped.
    again = framework.train(
        cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    assert again["train_steps"] == 32 and again["stop_reason"] == "early_stopping"


def test_target_stops_and_records_time_to_target(tmp_path):
    cfg = h.config(
        model_dir=str(tmp_path), epochs=20, target="test_accuracy>=0.7", learning_rate=0.05
    )
    result = framework.train(
        cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
    )
    assert result["stop_reason"] == "target"
    assert result["target_step"] < 20 * 64 and result["test_accuracy"] >= 0.7
    assert 0 < result["time_to_target_seconds"] <= result["wall_seconds"]


@pytest.mark.slow
def test_hooks_see_every_loop_and_a_second_run_in_one_process_works():
    seen = []
    for _ in range(2):  # a notebook re-running its cell
        cfg = h.config(epochs=1, steps_per_loop=16)
        framework.train(
            cfg,
            h.mnist_data(),
            model_fn=h.mlp_fn(),
            optimizer_fn=h.sgd,
            task=h.task(),
            hooks=[lambda info: seen.append((info.step, info.metrics["loss"]))],
        )
    assert [s for s, _ in seen] == [16, 32, 48, 64] * 2
    assert seen[3][1] < seen[0][1]


def test_full_disk_while_saving_is_reported_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import errno

    cfg = h.config(model_dir=str(tmp_path), epochs=2, checkpoint_every=16)
    trainer = build_trainer(
        cfg,
        h.mnist_data(),
        model_fn=h.mlp_fn(),
        optimizer_fn=h.sgd,
        task=h.task(),
        strategy=prepare_runtime(cfg),
    )
    controller = framework.Controller(trainer, h.mnist_data(), cfg)
    real_save = controller.checkpointer.manager.save

    def save(checkpoint_number):
        if checkpoint_number >= 48:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(checkpoint_number=checkpoint_number)

    monkeypatch.setattr(controller.checkpointer.manager, "save", save)
    with pytest.raises(
        framework.checkpointing.CheckpointError,
        match="No space left on device.*resumes from the last complete checkpoint",
    ):
        controller.run()
    assert tf.train.latest_checkpoint(tmp_path / "checkpoints").endswith("ckpt-32")


@pytest.mark.slow
def test_eval_every_epochs_and_the_last_evaluation_is_reused(tmp_path, monkeypatch):
    calls = []
    real_evaluate = framework.Controller.evaluate
    monkeypatch.setattr(
        framework.Controller,
        "evaluate",
        lambda self, split: calls.append(split) or real_evaluate(self, split),
    )
    for every, evaluated_epochs in ((2, [2, 4, 5]), (0, [5])):
        calls.clear()
        cfg = h.config(model_dir=str(tmp_path / str(every)), epochs=5, eval_every_epochs=every)
        result = framework.train(
            cfg, h.mnist_data(), model_fn=h.mlp_fn(), optimizer_fn=h.sgd, task=h.task()
        )
        history = json.loads((tmp_path / str(every) / "history.json").read_text())
        assert history["epoch"] == evaluated_epochs
        assert calls == ["test"] * len(evaluated_epochs)  # the final result reuses the last epoch's
        assert result["test_accuracy"] == history["test_accuracy"][-1] > 0.5
