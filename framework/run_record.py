"""The configuration a run directory was trained with, so it is never resumed with another one.

`prepare(model_dir, record, fresh_start=...)` runs once per run, before the model is built:

  * a directory with a checkpoint and a recorded configuration (`model_dir/run_config.json`) that
    differs in anything that changes the training is refused (`RunDirectoryError`, a ConfigError:
    the command line prints one line and exits 2), naming each differing option, old and new;
  * the same command resumes (options that do not change the training may differ, see
    NOT_TRAINING and EVALUATION);
  * `fresh_start=True` moves the directory's files into `model_dir/previous/<time>/` (nothing is
    deleted) and starts from step 0;
  * then the chief writes the record, after `framework.checkpointing.repair` has made the
    checkpoints (and best/) resumable: damaged ones moved to `model_dir/damaged/<time>/`, the index
    rebuilt; none readable is refused (never a silent start from step 0).

A record that cannot be read is refused in one line naming it: the checkpoints do not hold the
configuration, so it cannot be rebuilt; moving it away resumes without comparing.

Only the chief worker reads and writes the directory; on several workers they agree on the verdict
(an all-reduce, which also keeps any worker from restoring before the chief moved files aside).
"""

import contextlib
import glob
import json
import os
import time

from absl import logging

from framework.config import ConfigError

RECORD_FILE = "run_config.json"
CHECKPOINT_DIRS = ("checkpoints", "best")
PREVIOUS_DIR = "previous"  # where --fresh_start moves an earlier run's files

# Options that never change what is trained: where and how often outputs are written, how the same
# steps are grouped into compiled calls, and where they run (a preempted run may resume elsewhere).
NOT_TRAINING = frozenset(
    {
        "model_dir",
        "fresh_start",
        "keep_checkpoints",
        "checkpoint_every",
        "export",
        "plot",
        "profile_steps",
        "verbose",
        "steps_per_loop",
        "steps_per_fetch",
        "strategy",
        "num_cpu_devices",
        "tpu",
        "gpu_memory_growth",
        "jit_compile",
        "deterministic",
        "data_service",
        "eval_at_start",
        "predictions",  # data_service: a resume may use another dispatcher
    }
)
# Options that change only the evaluations: they count only where evaluations steer the training
# (STEERING: early stopping and the target end it, reduce-LR-on-plateau changes the LR).
EVALUATION = frozenset(
    {
        "eval_every_epochs",
        "eval_batch_size",
        "monitor",
        "test_examples",
        "tta",
        "tta_translate",
        "eval_transforms",
        "eval_splits",
    }
)
STEERING = ("early_stopping_patience", "reduce_lr_patience", "target")


class RunDirectoryError(ConfigError):
    """A run directory holds a run with another configuration (or cannot be written)."""


def prepare(
    model_dir: str | None, record: dict, *, fresh_start: bool = False, strategy=None, ignore=()
) -> None:
    """Refuse, move aside (fresh_start) or accept `model_dir` for a run configured as `record`,
    then write the record. `ignore`: more option names that do not change this run's training."""
    if not model_dir:
        return
    error = None
    if _is_chief(strategy):
        try:
            if fresh_start:
                moved = move_aside(model_dir)
                if moved:
                    logging.info("--fresh_start: moved the earlier run's files to %s", moved)
            else:
                check(model_dir, record, ignore=ignore)
                repair_checkpoints(model_dir)
            write(model_dir, record)
        except RunDirectoryError as err:
            error = err
    if not _all_agree(strategy, error is None) and error is None:
        error = RunDirectoryError(
            f"--model_dir={model_dir}: the chief worker refused this run directory "
            "(its error says why)"
        )
    if error:
        raise error


def repair_checkpoints(model_dir: str) -> None:
    """checkpoints/ and best/ made resumable from their newest intact checkpoint (a
    RunDirectoryError when a folder holds checkpoints and none reads), before any worker restores
    one. A folder without `ckpt-*` files is left as it is (the chief's Checkpointer clears a lone
    index when it starts)."""
    from framework.checkpointing import (  # lazy: keeps TF out of --help
        CheckpointError,
        checkpoint_numbers,
        repair,
    )

    for folder in CHECKPOINT_DIRS:
        if not checkpoint_numbers(os.path.join(model_dir, folder)):
            continue
        try:
            repair(os.path.join(model_dir, folder))
        except CheckpointError as err:
            raise RunDirectoryError(str(err)) from err


def check(model_dir: str, record: dict, *, ignore=()) -> None:
    """Raises RunDirectoryError if `model_dir` holds a checkpoint of a run whose recorded
    configuration differs from `record` in an option that changes the training."""
    if not has_checkpoint(model_dir):
        return  # nothing to resume: a new run (an earlier attempt's record is overwritten)
    old = read(model_dir)
    if old is None:
        logging.warning(
            "%s has checkpoints but no %s (a run from before it was recorded): resuming "
            "without comparing configurations",
            model_dir,
            RECORD_FILE,
        )
        return
    changed = differences(old, record, ignore=ignore)
    if changed:
        listed = ", ".join(
            f"--{name}={_show(was)} (now {_show(now)})" for name, was, now in changed
        )
        raise RunDirectoryError(
            f"--model_dir={model_dir} holds a run trained with other settings: {listed}. "
            "Resuming it would continue that run, not train a new one: give a new "
            "--model_dir, or add --fresh_start to start afresh there (the old run's files "
            f"are moved to {os.path.join(model_dir, PREVIOUS_DIR)}/<time>/, nothing is "
            "deleted)"
        )


def differences(old: dict, new: dict, *, ignore=()) -> list[tuple[str, object, object]]:
    """(name, old value, new value) for each option that differs and changes the training. Options
    only one side knows (recorded by another version of the code) are not compared."""
    old, new = _jsonable(old), _jsonable(new)
    skip = set(NOT_TRAINING) | set(ignore)
    if not any(side.get(name) for side in (old, new) for name in STEERING):
        skip |= EVALUATION
    return [
        (name, old[name], new[name])
        for name in new
        if name in old and name not in skip and old[name] != new[name]
    ]


def has_checkpoint(model_dir: str | None) -> bool:
    """Whether `model_dir` holds a checkpoint that a run would resume: CheckpointManager's index, or
    `ckpt-*.index` files whose index is lost (framework.checkpointing.repair rebuilds it)."""
    if not model_dir:
        return False
    folder = os.path.join(model_dir, "checkpoints")
    return os.path.isfile(os.path.join(folder, "checkpoint")) or bool(
        glob.glob(os.path.join(glob.escape(folder), "ckpt-*.index"))
    )


def read(model_dir: str) -> dict | None:
    """The recorded configuration; for a run from before records, the one in its result.json."""
    path = os.path.join(model_dir, RECORD_FILE)
    if os.path.isfile(path):
        return _load(path, "config")
    result = os.path.join(model_dir, "result.json")
    if os.path.isfile(result):
        config = dict(_load(result, "config", required=False) or {})
        if not config:
            return None
        if config.pop("time_budget", None) is not None:
            config["train_steps"] = (
                0  # result.json held the budget's steps; the user asked for none
            )
        return config
    return None


def _load(path: str, key: str, *, required: bool = True):
    """`key` of the JSON object in `path`; a RunDirectoryError in one line if the file is
    damaged."""
    try:
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict) or (required and not isinstance(data.get(key), dict)):
            raise ValueError(f"no {key!r} object in it")
        return data.get(key)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunDirectoryError(
            f"{path} cannot be read ({reason}): it records the settings this run was trained with, "
            "which its checkpoints do not hold. Put back a good copy, or move the file away to "
            "resume without comparing settings; --fresh_start or another --model_dir starts afresh"
        ) from err


def write(model_dir: str, record: dict) -> None:
    path = os.path.join(model_dir, RECORD_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.makedirs(model_dir, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(
                {"config": _jsonable(record), "written": time.strftime("%Y-%m-%d %H:%M:%S")},
                f,
                indent=1,
                sort_keys=True,
            )
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):  # a half-written record is not left beside the good one
            os.remove(tmp)
        raise RunDirectoryError(f"--model_dir={model_dir}: cannot write there ({err})") from err


def move_aside(model_dir: str) -> str | None:
    """Moves everything in `model_dir` (but earlier `previous/` runs) into
    `model_dir/previous/<time>/`; returns that folder, or None if there was nothing to move."""
    if not os.path.isdir(model_dir):
        return None
    entries = sorted(e for e in os.listdir(model_dir) if e != PREVIOUS_DIR)
    if not entries:
        return None
    if not _holds_a_run(model_dir):  # e.g. --model_dir=. by mistake: never move a user's own files
        raise RunDirectoryError(
            f"--fresh_start: {model_dir} holds files but no run (no {RECORD_FILE} or "
            f"checkpoints/ in it or its sub-folders), so nothing was moved: give each run "
            f"a --model_dir of its own"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = os.path.join(model_dir, PREVIOUS_DIR, stamp), 1
    while os.path.exists(target):
        target, n = os.path.join(model_dir, PREVIOUS_DIR, f"{stamp}-{n}"), n + 1
    try:
        os.makedirs(target)
        for entry in entries:
            os.rename(os.path.join(model_dir, entry), os.path.join(target, entry))
    except OSError as err:
        raise RunDirectoryError(
            f"--fresh_start: cannot move the files of {model_dir} to {target} ({err})"
        ) from err
    return target


def _holds_a_run(model_dir: str, depth: int = 2) -> bool:
    """Whether `model_dir` or a sub-folder down to `depth` levels (a sweep's cell/repeat_<i>) holds
    a run's record or checkpoints."""
    if os.path.exists(os.path.join(model_dir, RECORD_FILE)) or os.path.isdir(
        os.path.join(model_dir, "checkpoints")
    ):
        return True
    return depth > 0 and any(
        _holds_a_run(entry.path, depth - 1)
        for entry in os.scandir(model_dir)
        if entry.is_dir() and entry.name != PREVIOUS_DIR
    )


def _jsonable(record: dict) -> dict:
    """What the record file holds (tuples as lists), so old and new compare alike."""
    return json.loads(json.dumps(record, default=str))


def _show(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "''"
    return repr(value) if isinstance(value, str) else str(value)


def chief_from_env() -> bool:
    """Whether this process is the chief by $TF_CONFIG (as framework.strategies.is_chief decides),
    for callers that have no strategy yet: a lone process is."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return True
    task = tf_config.get("task") or {}
    kind = task.get("type")
    return kind in (None, "chief") or (
        kind == "worker"
        and int(task.get("index", 0)) == 0
        and "chief" not in (tf_config.get("cluster") or {})
    )


def _is_chief(strategy) -> bool:
    if strategy is None:
        return True
    from framework.strategies import is_chief  # lazy: keeps TF out of --help

    return is_chief(strategy)


def _all_agree(strategy, ok: bool) -> bool:
    """Whether every worker's `ok` is True (an all-reduce mean: every worker waits for the chief
    here); a lone process agrees with itself."""
    from framework.strategies import agreed  # lazy: keeps TF out of --help

    return strategy is None or agreed(strategy, 1.0 if ok else 0.0) > 1.0 - 1e-9
