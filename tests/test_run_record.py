"""A run directory is resumed only by the same configuration (framework/run_record.py): the same
command resumes, other settings are refused before anything is built, --fresh_start moves the old
run aside."""

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

from framework import TrainConfig, run_record
from framework.run_record import RunDirectoryError
from trainers.experiment import ExperimentConfig, run_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = ExperimentConfig(
    dataset="mnist", model="mlp", widths=(16,), train_examples=512, test_examples=256
)


def _config(model_dir, **kw):
    base = dict(
        model_dir=str(model_dir),
        global_batch_size=64,
        train_steps=3,
        steps_per_loop=1,
        learning_rate=1e-3,
        export=False,
    )
    return TrainConfig(**{**base, **kw})


class FirstSteps:
    """A loop hook that records the step each loop started at; stops the run after `stop_at`
    steps."""

    def __init__(self, stop_at=None):
        self.starts, self.stop_at = [], stop_at

    def __call__(self, info):
        self.starts.append(info.step - info.steps)
        return self.stop_at is not None and info.step >= self.stop_at


def _files(root: pathlib.Path, skip=()) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in skip
    }


@pytest.mark.slow
def test_the_same_command_resumes_even_with_other_output_settings(tmp_path, data_dir):
    paused = FirstSteps(stop_at=1)
    run_experiment(EXP, _config(tmp_path), hooks=[paused])
    assert paused.starts == [0]
    recorded = json.loads((tmp_path / run_record.RECORD_FILE).read_text())["config"]
    assert recorded["learning_rate"] == 1e-3 and recorded["widths"] == [16]
    # Outputs, checkpoint cadence, placement and (without early stopping/plateau/target) evaluations
    # do not change the training: still the same run.
    resumed = FirstSteps()
    result = run_experiment(
        dataclasses.replace(EXP, test_examples=128, tta=True),
        _config(
            tmp_path,
            keep_checkpoints=1,
            checkpoint_every=1,
            eval_every_epochs=0,
            steps_per_loop=2,
            export=True,
        ),
        hooks=[resumed],
    )
    assert resumed.starts[0] == 1 and result["train_steps"] == 3


@pytest.mark.slow
def test_other_settings_are_refused_before_anything_is_built(tmp_path, data_dir, monkeypatch):
    run_experiment(EXP, _config(tmp_path))
    before = _files(tmp_path)
    import framework

    monkeypatch.setattr(framework, "build_trainer", lambda *a, **k: pytest.fail("built a trainer"))
    from trainers import experiment_data

    monkeypatch.setattr(
        experiment_data, "load_data", lambda *a, **k: pytest.fail("loaded the data")
    )
    with pytest.raises(RunDirectoryError) as err:
        run_experiment(EXP, _config(tmp_path, learning_rate=0.01, train_steps=5))
    message = str(err.value)
    assert "--learning_rate=0.001 (now 0.01)" in message and "--train_steps=3 (now 5)" in message
    assert "--fresh_start" in message and "new --model_dir" in message and "\n" not in message
    with pytest.raises(RunDirectoryError, match=r"--widths=16 \(now 32,32\)"):
        run_experiment(dataclasses.replace(EXP, widths=(32, 32)), _config(tmp_path))
    assert _files(tmp_path) == before  # nothing written, moved or trained


@pytest.mark.slow
def test_fresh_start_moves_the_old_run_aside_and_trains_from_step_0(tmp_path, data_dir):
    run_experiment(EXP, _config(tmp_path, export=True))
    before = _files(tmp_path)
    assert (
        "checkpoints/checkpoint" in before and "result.json" in before and "model.keras" in before
    )
    fresh = FirstSteps()
    result = run_experiment(
        EXP, _config(tmp_path, learning_rate=0.01, fresh_start=True), hooks=[fresh]
    )
    assert fresh.starts == [0, 1, 2] and result["train_steps"] == 3
    (previous,) = (tmp_path / run_record.PREVIOUS_DIR).iterdir()
    assert _files(previous) == before  # every old file, byte for byte
    assert (
        json.loads((tmp_path / run_record.RECORD_FILE).read_text())["config"]["learning_rate"]
        == 0.01
    )
    # And a second --fresh_start keeps both earlier runs.
    run_experiment(EXP, _config(tmp_path, fresh_start=True))
    assert len(list((tmp_path / run_record.PREVIOUS_DIR).iterdir())) == 2


@pytest.mark.slow
def test_a_time_budget_is_recorded_as_asked_and_a_resume_reuses_its_decision(
    tmp_path, data_dir, monkeypatch
):
    from trainers import time_budget

    exp = dataclasses.replace(EXP, train_minutes=0.001)
    first = run_experiment(exp, _config(tmp_path, train_steps=0, epochs=2))
    recorded = json.loads((tmp_path / run_record.RECORD_FILE).read_text())["config"]
    assert (
        recorded["train_steps"] == 0 and recorded["train_minutes"] == 0.001
    )  # the user's, not the budget's
    monkeypatch.setattr(
        time_budget,
        "measure_examples_per_sec",
        lambda **kw: pytest.fail("a resume must reuse time_budget.json"),
    )
    again = run_experiment(exp, _config(tmp_path, train_steps=0, epochs=2))
    assert again["train_steps"] == first["train_steps"]
    with pytest.raises(RunDirectoryError, match=r"--train_minutes=0.001 \(now 0.002\)"):
        run_experiment(
            dataclasses.replace(exp, train_minutes=0.002),
            _config(tmp_path, train_steps=0, epochs=2),
        )


@pytest.mark.slow
def test_repeats_check_every_repeat_before_training_and_fresh_start_keeps_them_together(
    tmp_path, data_dir
):
    from trainers.repeats import run_repeats

    run_repeats(EXP, _config(tmp_path), repeats=2)
    before = _files(tmp_path)
    with pytest.raises(
        RunDirectoryError, match=r"repeat_0 holds a run .*--learning_rate=0.001 \(now 0.01\)"
    ):
        run_repeats(EXP, _config(tmp_path, learning_rate=0.01), repeats=2)
    assert _files(tmp_path) == before
    run_repeats(EXP, _config(tmp_path, learning_rate=0.01, fresh_start=True), repeats=2)
    (previous,) = (tmp_path / run_record.PREVIOUS_DIR).iterdir()
    assert _files(previous) == before  # repeats.json and both repeats, together
    for i in range(2):  # both repeats trained afresh with the new settings
        assert run_record.read(str(tmp_path / f"repeat_{i}"))["learning_rate"] == 0.01
    assert (tmp_path / "repeats.json").exists()


@pytest.mark.slow
def test_a_sweep_checks_every_cell_before_training_any(tmp_path, data_dir, monkeypatch):
    from trainers import repeats

    repeats.run_sweep(EXP, _config(tmp_path), "learning_rate=0.01,0.001")
    repeats.run_sweep(
        EXP, _config(tmp_path), "learning_rate=0.01,0.001"
    )  # the same sweep: every cell resumes
    before = _files(tmp_path)
    trained = []
    monkeypatch.setattr(
        repeats, "run_experiment", lambda *a, **k: trained.append(a) or pytest.fail("trained")
    )
    with pytest.raises(
        RunDirectoryError, match=r"learning_rate-0.01/repeat_0 holds a run .*--seed=0 \(now 1\)"
    ):
        repeats.run_sweep(EXP, _config(tmp_path, seed=1), "learning_rate=0.01,0.001")
    assert not trained and _files(tmp_path).keys() == before.keys()


@pytest.mark.slow
def test_triplet_and_framework_train_follow_the_same_rule(tmp_path, data_dir):
    from framework import ClassificationTask, train
    from tests.engine_helpers import adam, mlp_fn, mnist_data
    from trainers import triplet

    cfg = _config(tmp_path / "triplet", monitor="test_triplet_accuracy")
    triplet.run_triplet(cfg, dataset="mnist", num_train=256, num_test=128)
    with pytest.raises(RunDirectoryError, match=r"--delta=0.5 \(now 0.2\)"):
        triplet.run_triplet(cfg, dataset="mnist", num_train=256, num_test=128, delta=0.2)

    data = mnist_data(train=512, test=256)
    kw = dict(model_fn=mlp_fn((16,)), optimizer_fn=adam, task=ClassificationTask(10))
    train(_config(tmp_path / "notebook"), data, **kw)
    train(_config(tmp_path / "notebook"), data, **kw)  # running the cell again resumes
    with pytest.raises(RunDirectoryError, match=r"--learning_rate=0.001 \(now 0.1\)"):
        train(_config(tmp_path / "notebook", learning_rate=0.1), data, **kw)
    with pytest.raises(RunDirectoryError, match=r"--train_shapes="):
        train(_config(tmp_path / "notebook"), mnist_data(train=256, test=256), **kw)


def test_which_options_count():
    old = {
        "learning_rate": 0.1,
        "model_dir": "a",
        "keep_checkpoints": 3,
        "tta": False,
        "test_examples": 0,
        "eval_every_epochs": 1,
        "early_stopping_patience": 0,
        "seed": 0,
        "old_only": 1,
    }
    same = {
        **old,
        "model_dir": "b",
        "keep_checkpoints": 1,
        "tta": True,
        "test_examples": 100,
        "eval_every_epochs": 5,
        "new_only": 2,
    }
    assert run_record.differences(old, same) == []
    # Where evaluations steer the training (early stopping here), they count.
    steering = {**same, "early_stopping_patience": 2}
    assert {name for name, _, _ in run_record.differences(old, steering)} == {
        "early_stopping_patience",
        "tta",
        "test_examples",
        "eval_every_epochs",
    }
    assert run_record.differences(old, {**old, "seed": 1}) == [("seed", 0, 1)]


def test_a_record_without_a_checkpoint_is_a_new_run(tmp_path):
    run_record.write(
        str(tmp_path), {"learning_rate": 0.1}
    )  # an attempt that failed before its first checkpoint
    run_record.prepare(str(tmp_path), {"learning_rate": 0.2})
    assert run_record.read(str(tmp_path)) == {"learning_rate": 0.2}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text("")
    with pytest.raises(RunDirectoryError):
        run_record.prepare(str(tmp_path), {"learning_rate": 0.3})


def test_fresh_start_never_moves_files_that_are_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "code").mkdir()
    with pytest.raises(RunDirectoryError, match="holds files but no run .* nothing was moved"):
        run_record.prepare(str(tmp_path), {"learning_rate": 0.1}, fresh_start=True)
    assert sorted(os.listdir(tmp_path)) == ["code", "notes.txt"]
    (tmp_path / "sweep_cell" / "repeat_0").mkdir(
        parents=True
    )  # an interrupted sweep: a record two levels down
    run_record.write(str(tmp_path / "sweep_cell" / "repeat_0"), {"learning_rate": 0.1})
    assert run_record.move_aside(str(tmp_path)) is not None and os.listdir(tmp_path) == ["previous"]


def test_a_run_from_before_records_is_compared_with_its_result_json(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text("")
    budget = {"train_steps": 0, "train_minutes": 1.0, "learning_rate": 0.1}
    (tmp_path / "result.json").write_text(
        json.dumps({"config": {**budget, "train_steps": 17, "time_budget": {}}})
    )
    run_record.prepare(str(tmp_path), budget)  # the budget's 17 steps are not the user's setting
    (tmp_path / run_record.RECORD_FILE).unlink()
    with pytest.raises(RunDirectoryError, match=r"--learning_rate=0.1 \(now 0.2\)"):
        run_record.prepare(str(tmp_path), {**budget, "learning_rate": 0.2})


@pytest.mark.cli
def test_cli_refuses_another_configuration_with_one_line_and_exit_2(tmp_path, data_dir):
    def mnist(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "trainers.mnist",
                "--model=mlp",
                "--train_examples=512",
                "--test_examples=256",
                "--train_steps=2",
                "--export=false",
                f"--model_dir={tmp_path}",
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": ROOT},
        )

    first = mnist()
    assert first.returncode == 0, first.stderr[-2000:]
    with concurrent.futures.ThreadPoolExecutor(
        2
    ) as pool:  # both only read the record: run them together
        same, other = pool.map(lambda args: mnist(*args), [(), ("--learning_rate=0.01",)])
    assert same.returncode == 0 and "resumed from" in same.stderr, same.stderr[-2000:]
    assert other.returncode == 2, other.stderr[-2000:]
    # absl's INFO lines ('I1202 05:48:14.551791 ... cli.py:91] config ...') are not errors.
    lines = [
        line
        for line in other.stderr.splitlines()
        if not _tensorflow_noise(line) and not (line[:1] == "I" and line[1:5].isdigit())
    ]
    assert (
        len(lines) == 1
        and lines[0].startswith("error: --model_dir=")
        and "Traceback" not in other.stderr
    )
    assert "--learning_rate=0.001 (now 0.01)" in lines[0] and "--fresh_start" in lines[0]


def _tensorflow_noise(line: str) -> bool:
    """TensorFlow's C++ start-up lines (another change silences them; the tests do not depend on
    it)."""
    return (
        line[:5] in ("I0000", "W0000", "E0000")
        or "oneDNN" in line
        or "cuda" in line.lower()
        or "absl::InitializeLog" in line
        or "rebuild TensorFlow" in line
        or line.startswith("To enable the following instructions")
        or not line.strip()
    )
