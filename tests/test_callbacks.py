"""Keras callbacks in our loop (framework/callbacks.py) against the same callbacks under Model.fit,
and each run's TensorBoard HParams (framework/hparams.py), read back with TensorBoard's own
reader."""

import csv
import os

import keras
import pytest
from engine_helpers import config, mlp_fn, mnist_arrays, sgd, task
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

from framework import ConfigError, Data, train
from framework import callbacks as callbacks_lib

# What our on_epoch_end/on_train_batch_end logs hold beyond fit's: the engine's step measurements.
ENGINE_LOGS = {"learning_rate", "reg_loss", "grad_norm"}
SIZES = dict(train=256, val=64)  # 8 steps of 32 per epoch


def data() -> Data:
    x, y, xt, yt = mnist_arrays()
    n, v = SIZES["train"], SIZES["val"]
    return Data(
        train=(x[:n], y[:n]),
        evals={"val": (xt[:v], yt[:v]), "test": (xt[v : 2 * v], yt[v : 2 * v])},
    )


class Recorder(keras.callbacks.Callback):
    """Every hook it receives, with its index and its logs' keys."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def set_params(self, params):
        super().set_params(params)
        self.seen.append(("set_params", dict(params)))

    def __getattribute__(self, name):
        if name.startswith("on_") and name != "on_test_batch_begin" and name != "on_test_batch_end":
            seen = super().__getattribute__("seen")

            def record(*args, **kwargs):
                logs = kwargs.get("logs", args[-1] if args and isinstance(args[-1], dict) else None)
                index = args[0] if args and isinstance(args[0], int) else None
                seen.append((name, index, sorted(set(logs or ()) - ENGINE_LOGS)))

            return record
        return super().__getattribute__(name)


def ours(model_dir, callbacks=(), **overrides) -> dict:
    overrides = {"epochs": 2, "steps_per_loop": 4, "eval_splits": ("val",), **overrides}
    cfg = config(model_dir=str(model_dir), **overrides)
    return train(cfg, data(), model_fn=mlp_fn(), optimizer_fn=sgd, task=task(), callbacks=callbacks)


@pytest.mark.slow
def test_hooks_and_logs_keys_are_fits(tmp_path):
    """The same recording callback under Model.fit (steps_per_execution=4, our steps_per_loop) and
    in our loop: the same hooks in the same order, the same epochs and batch indices, the same logs
    keys (ours add only the engine's step measurements); fit's per-batch test hooks have no
    counterpart (one compiled pass)."""
    x, y, xt, yt = mnist_arrays()
    model = mlp_fn()()
    model.compile(
        optimizer=sgd(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=4,
    )
    under_fit = Recorder()
    model.fit(
        x[:256], y[:256], batch_size=32, epochs=2, verbose=0, shuffle=False,
        validation_data=(xt[:64], yt[:64]), callbacks=[under_fit],
    )  # fmt: skip
    in_loop = Recorder()
    ours(tmp_path, callbacks=[in_loop])
    assert in_loop.seen[0] == ("set_params", {"verbose": 0, "epochs": 2, "steps": 8})
    assert in_loop.seen == under_fit.seen
    assert ("on_epoch_end", 1, ["accuracy", "loss", "val_accuracy", "val_loss"]) in in_loop.seen


@pytest.mark.slow
def test_a_no_op_callback_leaves_the_run_bit_identical(tmp_path):
    without = ours(tmp_path / "a")
    board = keras.callbacks.TensorBoard(str(tmp_path / "keras_tb"))  # reads fit's model.optimizer
    with_one = ours(tmp_path / "b", callbacks=[keras.callbacks.Callback(), Recorder(), board])
    assert with_one["weights_fingerprint"] == without["weights_fingerprint"]
    assert with_one["test_accuracy"] == without["test_accuracy"]
    assert os.listdir(
        tmp_path / "keras_tb" / "validation"
    )  # Keras' TensorBoard callback wrote there


def hparams_experiment(logdir: str):
    """What TensorBoard's HPARAMS tab shows for a log folder: the plugin's experiment, inferred from
    the runs."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    plugin = backend_context.Context(
        base_plugin.TBContext(logdir=logdir, multiplexer=mux, data_provider=provider)
    )
    request = context.RequestContext()
    return plugin.experiment_from_metadata(
        request, "", True, plugin.hparams_metadata(request, ""),
        plugin.hparams_from_data_provider(request, "", limit=None),
    )  # fmt: skip


@pytest.mark.slow
def test_runs_write_hparams_that_tensorboard_compares(tmp_path):
    """Two runs that differ in their learning rate: TensorBoard's reader finds each run's HParams
    and final metrics, and its HPARAMS tab marks the learning rate (only) as differing, with
    test_accuracy a metric."""
    results = {
        lr: ours(tmp_path / "runs" / f"lr_{lr}", learning_rate=lr, epochs=1) for lr in (0.05, 0.1)
    }
    events = event_accumulator.EventAccumulator(
        str(tmp_path / "runs" / "lr_0.05"), size_guidance={event_accumulator.TENSORS: 0}
    )
    events.Reload()
    content = events.PluginTagToContent("hparams")[hparams_metadata.SESSION_START_INFO_TAG]
    hparams = hparams_metadata.parse_session_start_info_plugin_data(content).hparams
    assert hparams["learning_rate"].number_value == pytest.approx(0.05)
    assert hparams["eval_splits"].string_value == "val"
    assert hparams["jit_compile"].bool_value is False and "model_dir" not in hparams
    final = events.Tensors("test_accuracy")
    assert [e.step for e in final] == [8]
    assert float(tensor_util.make_ndarray(final[0].tensor_proto)) == pytest.approx(
        results[0.05]["test_accuracy"]
    )
    experiment = hparams_experiment(str(tmp_path / "runs"))
    differs = {info.name for info in experiment.hparam_infos if info.differs}
    assert differs == {"learning_rate"}, differs
    assert "test_accuracy" in {info.name.tag for info in experiment.metric_infos}


@pytest.mark.slow
def test_early_stopping_and_csv_logger_resume_where_they_were(tmp_path):
    """EarlyStopping stops at the epoch it stops at under an uninterrupted run, even when the run
    was paused (a hook) and resumed in between: its wait and best travel in the checkpoint.
    CSVLogger keeps one row per epoch across both sessions; a run the callback stopped stays stopped
    when run again."""

    def stopper():  # never improves by 1.0: stops once 2 evaluations did not improve
        return keras.callbacks.EarlyStopping("val_loss", patience=2, min_delta=1.0)

    def run(model_dir, hooks=(), csv_file=None):
        cbs = [stopper()] + ([keras.callbacks.CSVLogger(str(csv_file))] if csv_file else [])
        cfg = config(model_dir=str(model_dir), epochs=6, steps_per_loop=4, eval_splits=("val",))
        return train(
            cfg,
            data(),
            model_fn=mlp_fn(),
            optimizer_fn=sgd,
            task=task(),
            hooks=hooks,
            callbacks=cbs,
        )

    straight = run(tmp_path / "straight")
    assert (straight["stop_reason"], straight["train_steps"]) == ("callback", 24)
    csv_file = tmp_path / "log.csv"
    paused = run(tmp_path / "paused", hooks=[lambda info: info.step >= 16], csv_file=csv_file)
    assert (paused["stop_reason"], paused["train_steps"]) == ("hook", 16)
    resumed = run(tmp_path / "paused", csv_file=csv_file)
    assert (resumed["stop_reason"], resumed["train_steps"]) == ("callback", 24)
    assert resumed["weights_fingerprint"] == straight["weights_fingerprint"]
    with open(csv_file) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    assert run(tmp_path / "paused")["train_steps"] == 24  # stopped stays stopped


@pytest.mark.parametrize(
    "callback, says",
    [
        (keras.callbacks.ReduceLROnPlateau(), "--reduce_lr_patience"),
        (keras.callbacks.LearningRateScheduler(lambda e, lr: lr), "--reduce_lr_patience"),
        (keras.callbacks.BackupAndRestore("/tmp/nowhere"), "resumes it"),
        (keras.callbacks.EarlyStopping("val_acc"), "valid: loss"),
        (keras.callbacks.EarlyStopping("val_accuracy"), "mode='max'"),
        ("not a callback", "not a keras.callbacks.Callback"),
    ],
)
def test_callbacks_the_loop_cannot_honour_are_refused(callback, says):
    with pytest.raises(ConfigError, match=says):
        callbacks_lib.check([callback], log_names=["loss", "accuracy", "val_loss", "val_accuracy"])


def test_the_callbacks_flag_is_checked_before_training(tmp_path):
    (tmp_path / "mine.py").write_text(
        "import keras\n\ndef ok():\n    return [keras.callbacks.CSVLogger('x.csv')]\n\n"
        "def one():\n    return keras.callbacks.CSVLogger('x.csv')\n"
    )
    assert isinstance(callbacks_lib.load(f"{tmp_path}/mine.py:ok")[0], keras.callbacks.CSVLogger)
    for spec, says in [
        (f"{tmp_path}/mine.py:one", "not a list"),
        (f"{tmp_path}/mine.py:gone", "AttributeError"),
        ("no_such_module:fn", "ModuleNotFoundError"),
        ("mine", "package.module:function"),
    ]:
        with pytest.raises(ConfigError, match=says):
            callbacks_lib.load(spec)
    with pytest.raises(ConfigError, match="not a list"):  # from train(), before any step
        train(
            config(model_dir=str(tmp_path / "run"), callbacks=f"{tmp_path}/mine.py:one"),
            data(), model_fn=mlp_fn(), optimizer_fn=sgd, task=task(),
        )  # fmt: skip
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.cli
def test_a_bad_callbacks_flag_exits_2_with_one_line_before_training(tmp_path, data_dir):
    from cli_runs import run_commands

    (tmp_path / "cbs.py").write_text(
        "import keras\n\ndef plateau():\n    return [keras.callbacks.ReduceLROnPlateau()]\n"
    )
    bad = {
        "module": ("no_such_module:fn", "No module named 'no_such_module'"),
        "plateau": (f"{tmp_path}/cbs.py:plateau", "ReduceLROnPlateau sets optimizer.learning_rate"),
    }
    runs = run_commands(
        {
            key: (
                "trainers.mnist",
                [f"--callbacks={spec}", "--train_steps=2", f"--model_dir={tmp_path / key}"],
            )
            for key, (spec, _) in bad.items()
        }
    )
    for key, (code, _, stderr) in runs.items():
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and bad[key][1] in errors[0], stderr[-2000:]
        assert "Traceback" not in stderr and not (tmp_path / key / "checkpoints").exists()
