"""`--train_minutes`: train as many steps as fit in N minutes on this machine, decided before
training.

About 15 s of the real train loop are timed on a throwaway trainer, then the run gets a fixed
`train_steps` (never more than `--epochs`), so the LR schedule, resume and the result stay
deterministic. The decision is kept in `model_dir/time_budget.json`: a resumed run reuses it (the
run directory's record, `framework.run_record`, holds the user's configuration: train_steps 0 and
the minutes, not the steps chosen here).

With `--budget_ladder` (the cifar fast recipe's, off as soon as --widths or --epochs is given), the
budget also picks the net: the largest rung of LADDERS[model] (widths x epochs) whose training fits.
The speed measured on the recipe's net says how fast the wider nets could be; a candidate that might
fit but is not sure to is timed too (at most _MEASURED_RUNGS; choose_rung says how), since conv
FLOPs alone over-charge the wide nets on a CPU (their element-wise ops grow only linearly with the
width). When not even the first rung's epochs fit, the first rung trains what fits, as without a
ladder. Then train_steps = the rung's epochs, whatever --epochs says. One `time budget:` line logs
the budget, each speed measured, the rung chosen and its estimated minutes.

The rungs grow the net and its epochs together, batch 256 and the fast recipe's schedule throughout,
up to the full net's width: a wider net needs more epochs to pay for its cost (measured runs: the
README's table and benchmarks/reports/).
"""

import json
import math
import os
import time

from absl import logging

from framework import ConfigError, build_trainer, input_pipeline, run_record
from framework.checkpointing import atomic_write
from framework.strategies import agreed

BUDGET_FILE = "time_budget.json"
# model -> rungs (widths, epochs), smallest first: the first is the recipe's own net (measured).
LADDERS = {
    "airbench": (
        ((24, 96, 96), 10),
        ((32, 128, 128), 12),
        ((40, 160, 160), 12),
        ((48, 192, 192), 14),
        ((64, 256, 256), 16),
    ),
}
_WARMUP_STEPS = 5  # the first steps after tracing run slower (oneDNN primitive caches fill)
_TIMED_STEPS = 5  # timed in chunks of this many steps (whole lookahead cycles) ...
# ... as many as fill this long: a small CPU's speed wanders from one loop to the next, and a few
# steps alone read well below the run's speed.
_TIMED_SECONDS = 15.0
_TIMED_SHARE = 0.05  # ... or this share of the budget, if less
_MEASURED_RUNGS = 2  # candidate rungs timed besides the recipe's net (each ~15 s + its tracing)


def steps_for_budget(
    minutes: float,
    *,
    config,
    data,
    model_fn,
    optimizer_fn,
    task,
    strategy,
    ladder=None,
    widths=(),
    rung_model_fn=None,
) -> dict:
    """{'train_steps', 'examples_per_sec', 'minutes', ...}: the steps that fit, at most epochs *
    per_epoch; with `ladder` (rungs of (widths, epochs), the model measured at `widths`), also the
    rung's 'widths'. `rung_model_fn(widths)` builds a rung's model, to time a candidate rung
    (choose_rung)."""
    # Only a resume reuses the decision (framework.run_record has checked that it is the same run);
    # a new run in the directory (nothing to resume) measures again.
    saved = _read(config.model_dir) if run_record.has_checkpoint(config.model_dir) else None
    if (
        saved
        and saved["minutes"] == minutes
        and saved["global_batch_size"] == config.global_batch_size
    ):
        logging.info("time budget: reusing %s (%d steps)", BUDGET_FILE, saved["train_steps"])
        return saved
    seconds = min(_TIMED_SECONDS, _TIMED_SHARE * minutes * 60)

    def measure(fn):
        return measure_examples_per_sec(
            config=config,
            data=data,
            model_fn=fn,
            optimizer_fn=optimizer_fn,
            task=task,
            strategy=strategy,
            seconds=seconds,
        )

    rate = measure(model_fn)
    per_epoch = input_pipeline.steps_per_epoch(len(data.train[0]), config.global_batch_size)
    if ladder:
        decision = choose_rung(
            minutes,
            rate,
            ladder=ladder,
            measured_widths=widths,
            steps_per_epoch=per_epoch,
            global_batch_size=config.global_batch_size,
            image_size=data.train[0].shape[1],
            measure=(lambda w: measure(rung_model_fn(w))) if rung_model_fn else None,
        )
        logging.info("%s", decision["line"])
    else:
        fit = int(minutes * 60 * rate / config.global_batch_size)
        steps = max(1, min(fit, config.epochs * per_epoch))
        decision = {
            "minutes": minutes,
            "global_batch_size": config.global_batch_size,
            "examples_per_sec": rate,
            "train_steps": steps,
            "epochs": steps / per_epoch,
        }
        logging.info(
            "time budget: %.0f ex/s measured; %g minutes fit %d steps (%.2f epochs; --epochs=%d "
            "caps at %d)",
            rate,
            minutes,
            fit,
            fit / per_epoch,
            config.epochs,
            config.epochs * per_epoch,
        )
    if config.model_dir:
        os.makedirs(config.model_dir, exist_ok=True)
        with atomic_write(os.path.join(config.model_dir, BUDGET_FILE)) as tmp, open(tmp, "w") as f:
            json.dump(decision, f, indent=2)
    return decision


def choose_rung(
    minutes: float,
    examples_per_sec: float,
    *,
    ladder,
    measured_widths,
    steps_per_epoch: int,
    global_batch_size: int,
    image_size: int = 32,
    measure=None,
) -> dict:
    """The largest rung of `ladder` whose training fits `minutes`; the first rung cut to what fits
    when none does. Pure Python but for `measure(widths) -> ex/s`, which times a rung's net (at most
    _MEASURED_RUNGS of them).

    Speeds come from the nets measured (`examples_per_sec` at `measured_widths`, then the rungs
    timed): between two of them by log-log interpolation over conv FLOPs, past the widest one
    measured by its FLOPs (cost per example proportional: an over-estimate, since element-wise ops
    grow only linearly with the width). A rung is timed when an optimistic guess (cost growing as
    the square root of FLOPs, closer to what CPUs show for these nets) says it fits and the FLOPs
    estimate says it does not: the largest such rung first."""
    speeds = {
        conv_flops(measured_widths, image_size): examples_per_sec
    }  # conv FLOPs -> measured ex/s

    def speed(widths, beyond, between=True):
        flops = conv_flops(widths, image_size)
        low = max([f for f in speeds if f <= flops] or [min(speeds)])
        above = [f for f in speeds if f >= flops]
        if not (above and between):
            return speeds[low] * (low / flops) ** beyond
        high = min(above)
        if high == low:
            return speeds[low]
        t = math.log(flops / low) / math.log(high / low)
        return math.exp((1 - t) * math.log(speeds[low]) + t * math.log(speeds[high]))

    def estimate_minutes(widths, steps, beyond=1.0, between=True):
        return steps * global_batch_size / speed(widths, beyond, between) / 60

    def largest_fitting(beyond):
        fits = [
            (tuple(w), e)
            for w, e in ladder
            if estimate_minutes(w, e * steps_per_epoch, beyond) <= minutes
        ]
        return fits[-1] if fits else None

    for _ in range(_MEASURED_RUNGS if measure else 0):
        guess = largest_fitting(beyond=0.5)
        if (
            guess is None
            or conv_flops(guess[0], image_size) in speeds
            or estimate_minutes(guess[0], guess[1] * steps_per_epoch, between=False) <= minutes
        ):
            # nothing to time: no candidate, timed already, or it fits by FLOPs from a net timed
            # below
            break
        speeds[conv_flops(guess[0], image_size)] = measure(guess[0])
    chosen = largest_fitting(beyond=1.0)
    if chosen is None:  # even the first rung's epochs do not fit: it trains what does
        widths, epochs = ladder[0]
        fit = int(minutes / estimate_minutes(widths, 1))
        steps = max(1, min(fit, epochs * steps_per_epoch))
    else:
        (widths, epochs), steps = chosen, chosen[1] * steps_per_epoch
    widths = tuple(widths)
    estimate = estimate_minutes(widths, steps)
    shown = (
        f"{epochs} epochs"
        if steps == epochs * steps_per_epoch
        else f"{steps / steps_per_epoch:.2f} epochs (of {epochs}: no rung fits)"
    )
    timed = {
        tuple(w): speeds[conv_flops(w, image_size)]
        for w, _ in ladder
        if conv_flops(w, image_size) in speeds and tuple(w) != tuple(measured_widths)
    }
    also = "".join(f", {rate:,.0f} at {','.join(map(str, w))}" for w, rate in timed.items())
    line = (
        f"time budget: {minutes:.1f} min, measured {examples_per_sec:,.0f} ex/s at "
        f"{','.join(map(str, measured_widths))}{also} -> rung {','.join(map(str, widths))} "
        f"x {shown}, est. {estimate:.1f} min"
    )
    return {
        "minutes": minutes,
        "global_batch_size": global_batch_size,
        "examples_per_sec": examples_per_sec,
        "measured_widths": list(measured_widths),
        "widths": list(widths),
        "train_steps": steps,
        "epochs": steps / steps_per_epoch,
        "estimated_minutes": estimate,
        "timed_rungs": {",".join(map(str, w)): rate for w, rate in timed.items()},
        "line": line,
    }


def conv_flops(widths, image_size: int = 32, channels: int = 3) -> int:
    """Forward FLOPs of airbench's convolutions for one image (trainers/airbench_net.py): the 2x2
    whitening conv (valid), then per group a 3x3 conv, a 2x2 max-pool, a 3x3 conv (same padding)."""
    whiten = 2 * 2 * 2 * channels  # 2 x p*p*c filters
    size = image_size - 1
    flops = 2 * size * size * 2 * 2 * channels * whiten
    previous = whiten
    for width in widths:
        flops += 2 * size * size * 9 * previous * width
        size //= 2
        flops += 2 * size * size * 9 * width * width
        previous = width
    return flops


def measure_examples_per_sec(
    *, config, data, model_fn, optimizer_fn, task, strategy, seconds: float
) -> float:
    """Examples per second of the real train loop over about `seconds` (at least one chunk of
    steps), on a throwaway trainer (its own model copy). Several workers measure together and agree
    on it."""
    # With lookahead, warm up a whole cycle (its first update runs slow) and time whole cycles.
    every = config.lookahead_every or 1
    warmup = max(_WARMUP_STEPS, every)
    chunk = -(-_TIMED_STEPS // every) * every
    trainer, iterator = throwaway_loop(
        config=config,
        data=data,
        model_fn=model_fn,
        optimizer_fn=optimizer_fn,
        task=task,
        strategy=strategy,
    )
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
    return agreed(
        strategy, chunks * chunk * config.global_batch_size / (time.perf_counter() - start)
    )


def throwaway_loop(*, config, data, model_fn, optimizer_fn, task, strategy):
    """(trainer, iterator): the run's real train loop on its own model copy, one batch per next(),
    for timing (and benchmarks.step_profile's trace) before or apart from the run."""
    trainer = build_trainer(
        config.replace(steps_per_fetch=1),
        data,
        model_fn=model_fn,
        optimizer_fn=optimizer_fn,
        task=task,
        strategy=strategy,
    )
    dataset_fn = input_pipeline.train_dataset_fn(
        data.train,
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        host_fn=data.host_fn,
        **data.pipeline,
    )
    return trainer, iter(strategy.distribute_datasets_from_function(dataset_fn))


def _read(model_dir):
    """The decision a resumed run reuses; a damaged file is one line (a ConfigError): the
    checkpoints do not hold the step count it chose, and measuring again would change the rest of
    the run."""
    path = os.path.join(model_dir, BUDGET_FILE) if model_dir else None
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            decision = json.load(f)
        for key in ("minutes", "global_batch_size", "train_steps"):
            if not isinstance(decision.get(key), (int, float)):
                raise ValueError(f"no number {key!r} in it")
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(
            f"{path} cannot be read ({str(err).splitlines()[0]}): it holds the train_steps "
            "--train_minutes chose for this run. Put back a good copy; or move it away to measure "
            "again (the rest of the run then follows the new step count); --fresh_start or another "
            "--model_dir starts afresh"
        ) from err
    return decision
