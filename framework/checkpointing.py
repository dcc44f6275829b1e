"""Checkpoints of everything a resume needs: weights, optimizer slots, step, LR scale, loop state
(and the lookahead averages when it is on).

The data position is the step itself (the data order is a function of seed and epoch, see
input_pipeline.py), and the augmentation RNG is stateless in (seed, step, replica), so
(weights, optimizer, step, lr_scale, controller state) is the complete state of a run. Keras'
dropout seed-generator states are model variables and travel with the weights.

`tf.train.CheckpointManager` writes the index file only after the data files, so a checkpoint
half-written when the process died is never the one restored. Damage that happens later (a
truncated copy, a full disk on sync, a garbage or missing index) is found by `repair`, run before
any checkpoint is read: the newest checkpoint whose every tensor reads back (TF checks each one's
CRC) wins, damaged ones are moved to `model_dir/damaged/<time>/`, never deleted, and the index is
rebuilt from the `ckpt-*.index` files present.
"""

import contextlib
import glob
import json
import os
import re
import shutil
import time

import tensorflow as tf
from absl import logging

DAMAGED_DIR = "damaged"  # model_dir/damaged/<time>/<checkpoints|best>/: unreadable checkpoints
_CKPT = re.compile(r"ckpt-(\d+)\.index$")
_verified: dict[str, tuple] = {}  # prefix -> (size, mtime) of its files when last read back whole


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or does not fit this run; the message says what to do."""


class WriteError(CheckpointError):
    """A file of the run could not be written (a full disk, a permission); the folder stays
    resumable."""


class Checkpointer:
    def __init__(
        self,
        trainer,
        directory: str,
        *,
        max_to_keep: int,
        is_chief: bool = True,
        worker_id: int = 0,
    ):
        # Loop state (history, controls) as JSON in a string variable: saved atomically with the
        # weights.
        self.state = tf.Variable("{}", dtype=tf.string, trainable=False, name="loop_state")
        self.checkpoint = tf.train.Checkpoint(
            # Keras 3 models do not expose their variables to tf.train.Checkpoint: list them.
            model_variables=list(trainer.model.variables),
            optimizer=trainer.optimizer,
            step=trainer.step,
            lr_scale=trainer.lr_scale,
            loop_state=self.state,
            **({"lookahead": trainer.lookahead.averages} if trainer.lookahead is not None else {}),
        )
        self.directory = directory
        if is_chief:  # before the manager reads the index: it must list only intact checkpoints
            repair(directory)
        # Every worker must take part in a multi-worker save; only the chief's copy is kept.
        write_dir = (
            directory if is_chief else os.path.join(directory, f".scratch_worker_{worker_id}")
        )
        self._write_dir = write_dir
        self._scratch = None if is_chief else write_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, write_dir, max_to_keep=max_to_keep
        )

    @property
    def latest(self) -> str | None:
        # Every worker restores the chief's checkpoint (its own copies were scratch, now deleted).
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> dict | None:
        """Restore the newest complete checkpoint; returns its loop state, or None for a fresh
        run."""
        path = self.latest
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as err:
            raise CheckpointError(
                f"cannot resume from {path}: it was written by a different configuration "
                f"(another model, optimizer or precision?): {str(err).splitlines()[0]}. "
                "Use a new --model_dir, or --fresh_start to start over there (the old "
                "run's files are moved aside)"
            ) from err
        return json.loads(self.state.numpy().decode())

    def save(self, step: int, loop_state: dict) -> str:
        self.state.assign(json.dumps(loop_state))
        before = set(os.listdir(self._write_dir)) if os.path.isdir(self._write_dir) else set()
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as err:
            # What this save began is incomplete: remove it, so that neither the space it holds nor
            # a half-written ckpt-<step> is left for the next resume (the previous checkpoint is
            # intact).
            _remove_new(self._write_dir, before, f"ckpt-{step}")
            if self._scratch:
                shutil.rmtree(self._scratch, ignore_errors=True)
            raise WriteError(
                f"could not write the checkpoint of step {step} to {self.directory}: "
                f"{_reason(err)}. Free space (or fix the permission) and run the same command "
                "again: it resumes from the last complete checkpoint"
            ) from err
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        return path


def repair(directory: str) -> str | None:
    """Make `directory` (a CheckpointManager's folder) resumable from its newest intact checkpoint;
    returns that checkpoint's prefix, or None when the folder holds none (a new run).

    Newest first, each `ckpt-N` is read back whole until one reads; those that did not are moved to
    `model_dir/damaged/<time>/<folder>/` with one warning line. Partial files of a save that died
    (`ckpt-N_temp*`, `checkpoint.tmp*`) are removed: a finished save renames them away, so they
    never hold a checkpoint. A missing, garbage or stale index is rebuilt; the checkpoints a rebuilt
    index lists carry no timestamps, so CheckpointManager never rotates them away. If the folder
    holds checkpoints and none reads, CheckpointError names them (never a silent start from step
    0)."""
    if not os.path.isdir(directory):
        return None
    for leftover in glob.glob(os.path.join(directory, "ckpt-*_temp*")) + glob.glob(
        os.path.join(directory, "checkpoint.tmp*")
    ):
        _remove(leftover)
    numbers = checkpoint_numbers(directory)
    damaged, newest = [], None
    for number in reversed(numbers):
        prefix = os.path.join(directory, f"ckpt-{number}")
        why = damage(prefix)
        if why is None:
            newest = prefix
            break
        damaged.append((prefix, why))
    if numbers and newest is None:
        listed = "; ".join(f"{os.path.basename(p)}: {why}" for p, why in damaged)
        best = os.path.basename(os.path.normpath(directory)) == "best"
        raise CheckpointError(
            f"no checkpoint in {directory} can be read ({listed}). Nothing was moved or deleted: "
            "copy intact files back, "
            + (f"move {directory} aside to go on without the best checkpoint, " if best else "")
            + "or start afresh with --fresh_start (these files are moved to previous/<time>/) or "
            "another --model_dir"
        )
    notes = []
    if damaged:
        moved_to = _move_aside(directory, [f for p, _ in damaged for f in _files(p)])
        notes.append(
            f"damaged {', '.join(os.path.basename(p) for p, _ in damaged)} "
            f"({'; '.join(why for _, why in damaged)}) moved to {moved_to}"
        )
    notes += _rebuild_index(directory, newest, {p for p, _ in damaged})
    if notes:
        where = (
            f"resuming from {os.path.basename(newest)}" if newest else "no checkpoint: a new run"
        )
        logging.warning("%s: %s; %s", directory, "; ".join(notes), where)
    return newest


def checkpoint_numbers(directory: str) -> list[int]:
    """The N of every `ckpt-N.index` file in `directory`, ascending."""
    names = os.listdir(directory) if os.path.isdir(directory) else ()
    return sorted(int(m.group(1)) for m in map(_CKPT.match, names) if m)


def damage(prefix: str) -> str | None:
    """Why the checkpoint `prefix` cannot be restored (one line), or None when every tensor reads
    back (TF checks each tensor's CRC32C) and its loop state is a JSON object."""
    files = sorted(glob.glob(glob.escape(prefix) + ".*"))
    stamp = tuple((os.path.getsize(f), os.path.getmtime(f)) for f in files)
    if _verified.get(prefix) == stamp:
        return None
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
        state = reader.get_tensor("loop_state/.ATTRIBUTES/VARIABLE_VALUE")
        if not isinstance(json.loads(state), dict):
            return "its loop state is not a JSON object"
    except Exception as err:  # any failure to read it back is damage, whatever TF raised
        text = getattr(err, "message", None) or str(err) or type(err).__name__
        return text.strip().splitlines()[0][:160]
    _verified[prefix] = stamp
    return None


@contextlib.contextmanager
def atomic_write(path: str):
    """Yields a temporary path beside `path` (same extension: Keras and NumPy want theirs) to write
    a file or folder to; on success it replaces `path`, on any failure it is removed. A full disk or
    a permission error becomes a WriteError: one line, and the same command resumes."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"
    try:
        yield tmp
        if os.path.isdir(tmp) and os.path.isdir(
            path
        ):  # a folder (SavedModel): swap, then drop the old
            old = f"{root}.old{os.getpid()}{ext}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if is_write_failure(err):
            raise WriteError(
                f"could not write {path}: {_reason(err)}. Free space (or fix the permission) "
                "and run the same command again: it resumes from the last complete "
                "checkpoint"
            ) from err
        raise


def is_write_failure(err: BaseException) -> bool:
    """A failure of the disk, not of the code: OSError, or a TF error that says so."""
    if isinstance(err, OSError):
        return True
    if isinstance(err, (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError)):
        return True
    text = str(err).lower()
    return isinstance(err, tf.errors.OpError) and any(
        s in text for s in ("no space left", "permission denied", "read-only file system", "quota")
    )


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return text.strip().splitlines()[0]


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.remove(path)


def _remove_new(directory: str, before: set, prefix: str) -> None:
    """Removes what a failed save of `prefix` added to `directory` (its files, temp folder, index
    temp)."""
    if not os.path.isdir(directory):
        return
    for name in set(os.listdir(directory)) - before:
        if name.startswith((f"{prefix}.", f"{prefix}_temp", "checkpoint.tmp")):
            _remove(os.path.join(directory, name))


def _files(prefix: str) -> list[str]:
    return glob.glob(glob.escape(prefix) + ".*")


def _move_aside(directory: str, paths: list[str]) -> str:
    """Moves `paths` to model_dir/damaged/<time>/<folder>/ (never deleted); returns that folder."""
    model_dir, folder = os.path.split(os.path.normpath(directory))
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
    target = os.path.join(model_dir, DAMAGED_DIR, stamp, folder)
    while any(os.path.lexists(os.path.join(target, os.path.basename(p))) for p in paths):
        n += 1  # a second repair within the second: a folder of its own, nothing overwritten
        target = os.path.join(model_dir, DAMAGED_DIR, f"{stamp}-{n}", folder)
    os.makedirs(target, exist_ok=True)
    for path in paths:
        os.replace(path, os.path.join(target, os.path.basename(path)))
    return target


def _rebuild_index(directory: str, newest: str | None, damaged: set) -> list[str]:
    """Rewrites the index when it is missing, unreadable, lists a damaged or absent checkpoint, or
    misses `newest` (a save that died between its files and the index); returns what it did, for the
    warning. A readable index keeps its list and timestamps (CheckpointManager rotates them as
    before); an unreadable one is moved aside, and the new one lists `newest` alone, without a
    timestamp: the manager never deletes it, nor any checkpoint that no index lists."""
    index = os.path.join(directory, "checkpoint")
    if newest is None:
        if os.path.exists(index):  # an index without checkpoints: keep it aside, start afresh
            return [f"an index without checkpoints moved to {_move_aside(directory, [index])}"]
        return []
    try:
        with _tf_quiet():  # TF warns of a garbage index twice: the repair's line says it once
            state = tf.train.get_checkpoint_state(directory)
    except Exception:  # an index that cannot be parsed is rebuilt
        state = None
    listed = []
    if state is not None:
        listed = [
            os.path.join(directory, os.path.basename(p)) for p in state.all_model_checkpoint_paths
        ]
        current = os.path.join(directory, os.path.basename(state.model_checkpoint_path))
        if current == newest and all(
            p not in damaged and os.path.exists(p + ".index") for p in listed
        ):
            return []  # the index is right as it is
    notes = []
    if state is None and os.path.exists(index):
        notes.append(f"unreadable index moved to {_move_aside(directory, [index])}")
    keep = [
        i
        for i, p in enumerate(listed)
        if p not in damaged and p != newest and os.path.exists(p + ".index")
    ]
    stamps = list(state.all_model_checkpoint_timestamps) if state is not None else []
    timed = len(stamps) == len(listed) and stamps  # then CheckpointManager rotates them as before
    with _tf_quiet():  # update_checkpoint_state's deprecation warning, twice
        tf.compat.v1.train.update_checkpoint_state(
            directory,
            os.path.basename(
                newest
            ),  # relative, as CheckpointManager writes them: the folder may move
            all_model_checkpoint_paths=[
                *(os.path.basename(listed[i]) for i in keep),
                os.path.basename(newest),
            ],
            all_model_checkpoint_timestamps=[*(stamps[i] for i in keep), time.time()]
            if timed
            else None,
            last_preserved_timestamp=state.last_preserved_timestamp if timed else None,
        )
    return [*notes, "index rebuilt from the ckpt-*.index files"]


@contextlib.contextmanager
def _tf_quiet():
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)
