"""Each run's configuration and final metrics as TensorBoard HParams, so runs compare in the HPARAMS
tab.

At the end of a run, in model_dir (an events file of its own, beside train/ and eval/):

    hparams     every option of run_config.json with a single value (numbers, strings, booleans; a
                tuple as its comma-joined text) but the folder, as the plugin's session-start
                summary
    scalars     result.json's final numbers under their result.json names (test_accuracy,
                examples_per_sec, ...), at the run's last step

Point TensorBoard at the folder above several runs (`tensorboard --logdir runs/`: repeats, sweeps
and variants write one run folder each): its HPARAMS tab shows one row per run and lists first the
options whose values differ between the runs (TensorBoard works that out from the runs themselves),
with the metrics in the table and the parallel-coordinates view. `python -m trainers.compare` stays
the offline table.
"""

import numbers

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

# result.json entries that are not results of the training: bookkeeping, or the configuration
# itself.
NOT_METRICS = frozenset(
    {
        *("config", "train_steps", "num_replicas", "trainable_params", "non_trainable_params"),
        *("best_step", "target_step", "weights_fingerprint"),
    }
)
# Options that name where the run is rather than how it trains (TensorBoard shows the run's folder).
NOT_HPARAMS = frozenset({"model_dir", "fresh_start"})


def hparam_values(run_config: dict) -> dict:
    """The options TensorBoard can take as hyperparameters: one number, string or boolean each."""
    found = {}
    for name, value in run_config.items():
        if name in NOT_HPARAMS:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        if isinstance(value, (bool, str)) or isinstance(value, numbers.Real):
            found[name] = value
    return found


def final_metrics(result: dict) -> dict[str, float]:
    """result.json's finite numbers that measure the run, under their result.json names."""
    return {
        name: float(value)
        for name, value in result.items()
        if isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and name not in NOT_METRICS
        and value == value  # not NaN
    }


def write(model_dir: str | None, run_config: dict, result: dict) -> None:
    """The run's HParams and its final metrics, in model_dir (nothing without one)."""
    if not model_dir:
        return
    writer = tf.summary.create_file_writer(model_dir)
    with writer.as_default(step=int(result.get("train_steps", 0))):
        hp.hparams(hparam_values(run_config))  # its session group: a hash of these values
        for name, value in final_metrics(result).items():
            tf.summary.scalar(name, value)
    writer.close()
