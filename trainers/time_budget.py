"""`--train_minutes`: train as many steps as fit in N minutes on this machine, decided before training.

About 15 s of the real train loop are timed on a throwaway trainer, then the run gets a fixed
`train_steps` (never more than `--epochs`), so the LR schedule, resume and the result stay
deterministic. The decision is kept in `model_dir/time_budget.json`: a resumed run reuses it (the run
directory's record, `framework.run_record`, holds the user's configuration: train_steps 0 and the
minutes, not the steps chosen here).
"""
import json
import math
import os
import time

from absl import logging

from framework import build_trainer, input_pipeline, run_record
from framework.strategies import agreed

BUDGET_FILE = "time_budget.json"
_WARMUP_STEPS = 5  # the first steps after tracing run slower (oneDNN primitive caches fill)
_TIMED_STEPS = 5   # timed in chunks of this many steps (whole lookahead cycles) ...
_TIMED_SECONDS = 15.0  # ... as many as fill this long: a 2-core machine's speed wanders by +-15% from one
#                        15 s loop to the next, and 5 steps alone read 328 ex/s for a run that went at 408
_TIMED_SHARE = 0.05  # ... or this share of the budget, if less


def steps_for_budget(minutes: float, *, config, data, model_fn, optimizer_fn, task, strategy) -> dict:
    """{'train_steps', 'examples_per_sec', 'minutes'}: the steps that fit, at most epochs * per_epoch."""
    # Only a resume reuses the decision (framework.run_record has checked that it is the same run);
    # a new run in the directory (nothing to resume) measures again.
    saved = _read(config.model_dir) if run_record.has_checkpoint(config.model_dir) else None
    if saved and saved["minutes"] == minutes and saved["global_batch_size"] == config.global_batch_size:
        logging.info("time budget: reusing %s (%d steps)", BUDGET_FILE, saved["train_steps"])
        return saved
    rate = measure_examples_per_sec(config=config, data=data, model_fn=model_fn, optimizer_fn=optimizer_fn,
                                    task=task, strategy=strategy,
                                    seconds=min(_TIMED_SECONDS, _TIMED_SHARE * minutes * 60))
    per_epoch = input_pipeline.steps_per_epoch(len(data.train[0]), config.global_batch_size)
    fit = int(minutes * 60 * rate / config.global_batch_size)
    steps = max(1, min(fit, config.epochs * per_epoch))
    decision = {"minutes": minutes, "global_batch_size": config.global_batch_size,
                "examples_per_sec": rate, "train_steps": steps, "epochs": steps / per_epoch}
    logging.info("time budget: %.0f ex/s measured; %g minutes fit %d steps (%.2f epochs; --epochs=%d caps "
                 "at %d)", rate, minutes, fit, fit / per_epoch, config.epochs, config.epochs * per_epoch)
    if config.model_dir:
        os.makedirs(config.model_dir, exist_ok=True)
        with open(os.path.join(config.model_dir, BUDGET_FILE), "w") as f:
            json.dump(decision, f, indent=2)
    return decision


def measure_examples_per_sec(*, config, data, model_fn, optimizer_fn, task, strategy, seconds: float) -> float:
    """Examples per second of the real train loop over about `seconds` (at least one chunk of steps),
    on a throwaway trainer (its own model copy). Several workers measure together and agree on it."""
    # With lookahead, warm up a whole cycle (its first update runs slow) and time whole cycles.
    every = config.lookahead_every or 1
    warmup = max(_WARMUP_STEPS, every)
    chunk = -(-_TIMED_STEPS // every) * every
    trainer, iterator = throwaway_loop(config=config, data=data, model_fn=model_fn, optimizer_fn=optimizer_fn,
                                       task=task, strategy=strategy)
    trainer.run_train(iterator, warmup)  # traces, and fills oneDNN's primitive caches
    trainer.train_results()  # waits for the device
    start = time.perf_counter()
    trainer.run_train(iterator, chunk)
    trainer.train_results()  # host-device sync point: the chunk is done
    # Each step is a collective on several workers, so all must run the same number of chunks.
    chunks = max(1, math.ceil(seconds / agreed(strategy, time.perf_counter() - start)))
    if chunks > 1:
        trainer.run_train(iterator, (chunks - 1) * chunk)
        trainer.train_results()
    return agreed(strategy, chunks * chunk * config.global_batch_size / (time.perf_counter() - start))


def throwaway_loop(*, config, data, model_fn, optimizer_fn, task, strategy):
    """(trainer, iterator): the run's real train loop on its own model copy, one batch per next(), for
    timing (and benchmarks.step_profile's trace) before or apart from the run."""
    trainer = build_trainer(config.replace(steps_per_fetch=1), data, model_fn=model_fn, optimizer_fn=optimizer_fn,
                            task=task, strategy=strategy)
    dataset_fn = input_pipeline.train_dataset_fn(data.train, global_batch_size=config.global_batch_size,
                                                 seed=config.seed, host_fn=data.host_fn, **data.pipeline)
    return trainer, iter(strategy.distribute_datasets_from_function(dataset_fn))


def _read(model_dir):
    path = os.path.join(model_dir, BUDGET_FILE) if model_dir else None
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
