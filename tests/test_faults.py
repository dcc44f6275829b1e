"""Issue 33: damaged checkpoints and run files, and failed writes, never cost a run or a traceback.

One real MNIST run (64 steps, a checkpoint every 16, 3 kept: ckpt-32, -48, -64) is copied, damaged
the way a disk or a copy damages files, and resumed with the same configuration: it must end with
the weights of the run that was never touched, start from the newest intact checkpoint (never from
step 0 over this run's checkpoints), keep every damaged file under damaged/<time>/, or refuse in one
line that says what to do. Full disks are fake writers (monkeypatch): CI has no privileges to fill a
disk. SIGKILL at random moments, on one process and on 2 workers, is benchmarks/faults.py's soak
(too long for the suite).
"""

import errno
import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import framework
from framework import checkpointing, run_record
from framework.checkpointing import WriteError
from framework.run_record import RunDirectoryError
from tests import engine_helpers as h
from tests.test_processes import _final_variables

STEPS = 64


def _config(model_dir, **overrides):
    return h.config(
        model_dir=str(model_dir),
        epochs=2,
        global_batch_size=64,
        checkpoint_every=16,
        deterministic=True,
        **overrides,
    )


def _train(model_dir, **overrides):
    return framework.train(
        _config(model_dir, **overrides),
        h.mnist_data(),
        model_fn=h.mlp_fn(widths=(32,)),
        optimizer_fn=h.adam,
        task=h.task(),
    )


def _assert_same_weights(a, b):
    va, vb = _final_variables(a), _final_variables(b)
    assert va.keys() == vb.keys() and int(vb["step/.ATTRIBUTES/VARIABLE_VALUE"]) == STEPS
    for name in va:
        np.testing.assert_array_equal(va[name], vb[name], err_msg=name)


def _history(model_dir):
    history = json.loads((model_dir / "history.json").read_text())
    history.pop("wall_seconds")  # the one column that differs between sessions
    return history


def _truncate(prefix):
    (data,) = glob.glob(prefix + ".data-*")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)


def _mtimes(folder):
    return {p: os.path.getmtime(p) for p in glob.glob(os.path.join(folder, "ckpt-*"))}


def _damaged(model_dir, folder="checkpoints"):
    return sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "damaged", "*", folder, "*"))
    )


@pytest.fixture(scope="module")
def untouched(tmp_path_factory, data_dir):
    model_dir = tmp_path_factory.mktemp("untouched")
    result = _train(model_dir)
    assert result["train_steps"] == STEPS
    assert checkpointing.checkpoint_numbers(model_dir / "checkpoints") == [32, 48, 64]
    return model_dir


@pytest.fixture
def copy(untouched, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(untouched, model_dir)
    return model_dir


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_is_moved_aside_and_the_one_before_resumes(copy, untouched):
    folder = copy / "checkpoints"
    _truncate(str(folder / "ckpt-64"))
    # What a kill in the middle of a save leaves: a save's temp folder and a half-written index.
    (folder / "ckpt-80_temp").mkdir()
    (folder / "ckpt-80_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\x01" * 99)
    (folder / "checkpoint.tmp3f2a").write_text("model_checkpoint_path: ")
    older = _mtimes(copy / "checkpoints")
    result = _train(copy)
    assert result["train_steps"] == STEPS
    # ckpt-48 was restored and 16 steps trained again: the same weights as the run never damaged.
    _assert_same_weights(untouched, copy)
    assert _damaged(copy) == ["ckpt-64.data-00000-of-00001", "ckpt-64.index"]
    kept = _mtimes(copy / "checkpoints")
    assert (
        kept[str(copy / "checkpoints" / "ckpt-48.index")]
        == older[str(copy / "checkpoints" / "ckpt-48.index")]
    )
    assert _history(copy) == _history(untouched)
    assert not glob.glob(str(folder / "*tmp*")) and not glob.glob(str(folder / "*_temp*"))


@pytest.mark.slow
@pytest.mark.parametrize("index", ["garbage", "missing", "stale"])
def test_a_lost_or_garbage_index_is_rebuilt_and_no_checkpoint_is_overwritten(
    copy, untouched, index
):
    path = copy / "checkpoints" / "checkpoint"
    if index == "garbage":
        path.write_bytes(b"\x00\x17 not a CheckpointState {{{")
        (copy / "best" / "checkpoint").write_text("garbage")
    elif index == "missing":
        path.unlink()
    else:  # the save of step 64 died between its files and the index
        path.write_text(
            'model_checkpoint_path: "ckpt-48"\nall_model_checkpoint_paths: "ckpt-32"\n'
            'all_model_checkpoint_paths: "ckpt-48"\n'
        )
    before = _mtimes(copy / "checkpoints")
    result = _train(copy)
    # Resumed at step 64 (nothing trained, nothing saved over the old run), not from step 0.
    assert result["train_steps"] == STEPS
    assert _mtimes(copy / "checkpoints") == before
    assert tf.train.latest_checkpoint(copy / "checkpoints").endswith("ckpt-64")
    _assert_same_weights(untouched, copy)
    assert (
        _damaged(copy) == _damaged(copy, "best") == (["checkpoint"] if index == "garbage" else [])
    )


@pytest.mark.slow
def test_no_readable_checkpoint_is_refused_in_one_line_and_nothing_moves(copy):
    for number in (32, 48, 64):
        _truncate(str(copy / "checkpoints" / f"ckpt-{number}"))
    before = sorted(os.listdir(copy / "checkpoints"))
    with pytest.raises(RunDirectoryError) as refused:
        _train(copy)
    message = str(refused.value)
    assert "\n" not in message and "ckpt-32" in message and "ckpt-64" in message
    assert "--fresh_start" in message and "--model_dir" in message
    assert sorted(os.listdir(copy / "checkpoints")) == before and not _damaged(copy)


@pytest.mark.slow
def test_an_unreadable_best_checkpoint_is_refused_in_one_line(copy):
    (best,) = glob.glob(str(copy / "best" / "ckpt-*.index"))
    _truncate(best[: -len(".index")])
    with pytest.raises(RunDirectoryError) as refused:
        _train(copy)
    message = str(refused.value)
    assert "\n" not in message and os.path.basename(best[: -len(".index")]) in message
    assert "aside to go on without the best checkpoint" in message and "--fresh_start" in message


@pytest.mark.slow
def test_run_files_read_on_resume_fail_in_one_line_or_are_rebuilt(copy, untouched):
    (copy / "history.json").write_text('{"step": [16, 3')  # cut short: rebuilt from the checkpoint
    _train(copy)
    assert _history(copy) == _history(untouched)
    for damaged in ('{"config": {"seed": ', "[1, 2]", ""):
        (copy / "run_config.json").write_text(damaged)
        with pytest.raises(RunDirectoryError) as refused:
            _train(copy)
        message = str(refused.value)
        assert "\n" not in message and str(copy / "run_config.json") in message
        assert "move the file away" in message


def test_a_damaged_time_budget_decision_is_refused_in_one_line(tmp_path):
    from trainers import time_budget

    for damaged in ('{"minutes": 1, "train', '{"minutes": 1}', "[]"):
        (tmp_path / time_budget.BUDGET_FILE).write_text(damaged)
        with pytest.raises(framework.ConfigError) as refused:
            time_budget._read(str(tmp_path))
        assert "\n" not in str(refused.value) and time_budget.BUDGET_FILE in str(refused.value)


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow
def test_a_checkpoint_save_on_a_full_disk_leaves_the_folder_resumable(copy, untouched, monkeypatch):
    """The disk fills in the middle of the save of step 48 (its files half there): one line, its
    partial files gone; once space is freed the same call resumes from ckpt-32 and ends as if
    nothing happened."""
    for number in (48, 64):
        for path in glob.glob(str(copy / "checkpoints" / f"ckpt-{number}.*")):
            os.remove(path)
    with open(copy / "checkpoints" / "checkpoint", "w") as f:
        f.write('model_checkpoint_path: "ckpt-32"\nall_model_checkpoint_paths: "ckpt-32"\n')
    real_save = tf.train.CheckpointManager.save

    def save(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number == 48:
            prefix = os.path.join(manager.directory, "ckpt-48")
            os.makedirs(prefix + "_temp")
            with open(prefix + "_temp/part-00000-of-00001.data-00000-of-00001", "wb") as f:
                f.write(b"\x00" * 64)
            with open(prefix + ".data-00000-of-00001", "wb") as f:
                f.write(b"\x00" * 64)
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        return real_save(manager, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    with pytest.raises(WriteError) as failed:
        _train(copy)
    message = str(failed.value)
    assert "\n" not in message and "No space left on device" in message and "step 48" in message
    assert checkpointing.checkpoint_numbers(copy / "checkpoints") == [32]
    assert sorted(os.listdir(copy / "checkpoints")) == [
        "checkpoint",
        "ckpt-32.data-00000-of-00001",
        "ckpt-32.index",
    ]
    monkeypatch.setattr(tf.train.CheckpointManager, "save", real_save)  # space freed
    assert _train(copy)["train_steps"] == STEPS
    _assert_same_weights(untouched, copy)


@pytest.mark.slow
def test_a_full_disk_during_the_export_or_a_run_file_is_one_line_and_no_half_file(
    copy, monkeypatch
):
    real_save = keras.Model.save

    def save(model, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        _full_disk()

    monkeypatch.setattr(keras.Model, "save", save)
    with pytest.raises(WriteError) as failed:
        _train(copy, export=True)
    assert "\n" not in str(failed.value) and "model.keras" in str(failed.value)
    assert not [p for p in os.listdir(copy) if ".tmp" in p or p.startswith("model")]
    monkeypatch.setattr(keras.Model, "save", real_save)
    result = _train(copy, export=True)  # the same command, space freed: resumes and exports
    assert keras.saving.load_model(result["model_file"]).count_params() == 25450
    # Every other write goes through the same door: the old file stays whole, no temp is left.
    for name, write in (
        ("predictions.npz", lambda tmp: np.savez_compressed(tmp, logits=np.ones(3))),
        ("result.json", lambda tmp: open(tmp, "w").write("{")),
    ):
        before = (copy / name).read_bytes() if (copy / name).exists() else None

        def failing(tmp, write=write):
            write(tmp)
            _full_disk()

        with pytest.raises(WriteError, match=f"could not write .*{name}.*No space left"):
            with checkpointing.atomic_write(str(copy / name)) as tmp:
                failing(tmp)
        assert not [p for p in os.listdir(copy) if ".tmp" in p]
        assert ((copy / name).read_bytes() if (copy / name).exists() else None) == before
    with pytest.raises(WriteError, match="history.json: Permission denied"):
        monkeypatch.setattr("framework.outputs.json.dump", lambda *a, **k: _denied())
        framework.outputs.write_json(str(copy / "history.json"), {})


def _denied():
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


@pytest.mark.slow
def test_has_checkpoint_sees_checkpoints_whose_index_is_lost(copy):
    (copy / "checkpoints" / "checkpoint").unlink()
    assert run_record.has_checkpoint(str(copy))
