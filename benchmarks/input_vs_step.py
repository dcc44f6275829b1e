"""Is training slow because of the input pipeline or the step? Three measurements separate the two.

    python -m benchmarks.input_vs_step --trainer=cifar [--recipe=fast] [--out=DIR] [--steps=12] [--smoke]

The trainer is measured as `python -m trainers.<trainer> --recipe=<recipe>` runs it
(trainers/recipes.py; for cifar: airbench's net of trainers/airbench_net.py, "auto" = fast on a CPU,
full on a GPU/TPU):
1. input alone: iterate the trainer's training dataset (same pipeline, no model);
2. step alone: the trainer with --synthetic_data (one on-device batch, repeated);
3. both: the trainer as it runs.
`efficiency` = combined / min(input alone, step alone): 1.0 means input costs the step nothing.
Then a sweep of what usually fixes an input-bound run: parallel map calls, prefetch depth, and
augmenting in the tf.data map (host CPU) instead of inside the step (device).

Streamed cases, where decoding decides (their code: benchmarks/input_vs_step_streamed.py):

    python -m benchmarks.input_vs_step --case=cifar_jpeg [--examples=50000]   # CIFAR-10's JPEG bytes, decoded per step
    python -m benchmarks.input_vs_step --case=folder [--examples=10000 --folder_size=160]  # generated JPEG folder
    python -m benchmarks.input_vs_step --case=folder --folder_size=384 --folder_image_size=160  # photos, resized
    python -m benchmarks.input_vs_step --case=memory [--memory_gb=3 --memory_epochs=3]     # RSS over a big folder

Each streamed case measures, in the same process: the machine's raw decode rate (decode [+ resize]
of the bytes in memory, a tf.data map over all cores, no training), for a folder the same decode
over the files read from disk with no checks (what reading costs), the engine's streamed pipeline
alone (delivered rate; the ratio to raw; these three alternated --limit_repeats times, medians), the
step alone (synthetic batches), both, the verdict (which is slower, and the engine's own per-loop
input-wait classification), and the measured effect of each fix: num_parallel_calls=1 versus
AUTOTUNE, no prefetch, the decoded images cached in memory (when they fit), augmentation on the host
instead of the device, and 1 or 2 tf.data service workers (in this process).
The model is tiny (--stream_model) on purpose: it stands for a fast accelerator,
where a real net's step is quicker than the host's decode; on a 2-core CPU a real net would be
step-bound. `--case=memory` streams a generated folder of about --memory_gb decoded gigabytes for
--memory_epochs epochs and reports the peak RSS and the RSS at each epoch end (is it flat?).
"""  # noqa: E501

import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from benchmarks.report import bar_plot, machine_setup, write_report  # noqa: E402
from framework import input_pipeline  # noqa: E402
from trainers import evaluation, recipes  # noqa: E402
from trainers.experiment import load_data, make_task, run_experiment  # noqa: E402

flags.DEFINE_enum(
    "trainer", "cifar", ["cifar", "mnist", "fashion_mnist"], "Trainer whose recipe to measure."
)
flags.DEFINE_string(
    "recipe",
    "auto",
    "The trainer's recipe (trainers/recipes.py); auto: full on a GPU/TPU, "
    "fast on a CPU, as the trainer picks.",
)
flags.DEFINE_string(
    "out", "", "Report folder (default benchmarks/reports/input_vs_step/<trainer>)."
)
flags.DEFINE_integer("steps", 12, "Timed steps per measurement (after one warm-up loop).")
flags.DEFINE_bool("sweep", True, "Also sweep parallel calls, prefetch and where augmentation runs.")
flags.DEFINE_bool(
    "smoke", False, "Test size (the recipe's smoke variant, 2 timed steps): figures meaningless."
)
flags.DEFINE_enum(
    "case",
    "recipe",
    ["recipe", "cifar_jpeg", "folder", "memory"],
    "recipe: the trainer as it runs (in-memory pixels); cifar_jpeg / folder: streamed and decoded "
    "per step; memory: RSS over a large streamed folder.",
)
flags.DEFINE_integer(
    "examples", 10000, "cifar_jpeg / folder: training examples (JPEGs decoded, images generated)."
)
flags.DEFINE_integer(
    "folder_size", 160, "folder / memory: side of the generated JPEGs (CIFAR upscaled)."
)
flags.DEFINE_integer(
    "folder_image_size",
    0,
    "folder: side the generated JPEGs are resized to while streaming "
    "(the net's input; 0: --folder_size, no resize).",
)
flags.DEFINE_integer(
    "limit_repeats",
    5,
    "Streamed cases: alternations of raw decode, read + decode and input "
    "alone; their medians are the figures (1 under --smoke).",
)
flags.DEFINE_float(
    "memory_gb", 3.0, "memory: decoded size of the generated folder, in GB (1e9 bytes)."
)
flags.DEFINE_integer("memory_epochs", 3, "memory: epochs over the folder.")
flags.DEFINE_string(
    "stream_model",
    "tiny",
    "Streamed cases: the model: tiny (average-pool to 16x16, one hidden "
    "layer: a fast step at any image size) or a name of trainers/models.py.",
)
flags.DEFINE_integer("stream_batch", 128, "Streamed cases: global batch size.")
flags.DEFINE_float(
    "stream_seconds",
    1.5,
    "Streamed cases: each measurement times at least --steps steps and "
    "about this many seconds of raw decode (at most 400 steps), so buffers and autotuning's "
    "ramp do not decide the figure.",
)
flags.DEFINE_string(
    "stream_augment",
    "flip",
    "Streamed cases: the augmentation the sweep runs on the device "
    "and on the host (the other measurements have none).",
)
flags.DEFINE_string(
    "work_dir", "", "Where to generate the image folders (default: a temporary folder, removed)."
)
FLAGS = flags.FLAGS


def input_alone(exp, config, data, steps, **pipeline) -> float:
    """Examples/s of the training pipeline alone (what the step would receive), no model."""
    _, policy = make_task(exp, config, int(data.train[1].max()) + 1, data.train[0].shape[1:])
    host_fn = (
        evaluation.host_augment_fn(policy, config.seed)
        if exp.augment_on == "host" and policy
        else None
    )
    dataset = input_pipeline.train_dataset_fn(
        data.train,
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        host_fn=host_fn,
        **{**data.pipeline, **pipeline},
    )(tf.distribute.InputContext())
    iterator = iter(dataset)
    for _ in range(3):  # warm-up: builds the pipeline, fills buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps * 4):  # cheap compared with a step: time more of it
        batch = next(iterator)
    _ = [t.numpy() for t in tf.nest.flatten(batch)[:1]]
    return steps * 4 * config.global_batch_size / (time.perf_counter() - start)


def trained(exp, config, data, steps, **pipeline) -> dict:
    """Examples/s and input-wait fraction of the trainer over `steps` steps after a warm-up loop."""
    loops = []
    data = dataclasses.replace(
        data, pipeline={**data.pipeline, **pipeline}
    )  # keeps e.g. the alternating flip
    config = config.replace(
        train_steps=2 * steps, steps_per_loop=steps, model_dir=None, export=False
    )
    run_experiment(exp, config, data=data, hooks=[lambda info: loops.append(info)])
    timed = loops[1:]  # the first loop traces and compiles
    seconds = sum(i.seconds for i in timed)
    return {
        "examples_per_sec": sum(i.steps for i in timed) * config.global_batch_size / seconds,
        "input_wait_fraction": sum(i.input_seconds for i in timed) / seconds,
    }


def check_flags() -> None:
    """A bad value fails before anything is measured: exit 2, naming the flag and the rule."""
    for name, ok, rule in (
        ("steps", FLAGS.steps >= 1, ">= 1"),
        ("examples", FLAGS.examples >= 1, ">= 1"),
        ("folder_size", FLAGS.folder_size >= 1, ">= 1"),
        ("folder_image_size", FLAGS.folder_image_size >= 0, ">= 0 (0: --folder_size)"),
        ("memory_gb", FLAGS.memory_gb > 0, "> 0"),
        ("memory_epochs", FLAGS.memory_epochs >= 1, ">= 1"),
        ("stream_batch", FLAGS.stream_batch >= 1, ">= 1"),
        ("stream_seconds", FLAGS.stream_seconds > 0, "> 0"),
        ("limit_repeats", FLAGS.limit_repeats >= 1, ">= 1"),
    ):
        if not ok:
            raise app.UsageError(f"--{name}={FLAGS[name].value}: must be {rule}", exitcode=2)


def main(_):
    check_flags()
    if FLAGS.case != "recipe":
        from benchmarks import input_vs_step_streamed

        return input_vs_step_streamed.run(FLAGS)
    recipe = recipes.pick(FLAGS.trainer, FLAGS.recipe)
    exp, config = recipes.configs(FLAGS.trainer, recipe, smoke=FLAGS.smoke)
    out = FLAGS.out or os.path.join(
        os.path.dirname(__file__), "reports", "input_vs_step", FLAGS.trainer
    )
    data, _ = load_data(exp, config.seed)
    x_test, y_test = data.evals["test"]
    # Only training is timed; a small test slice keeps each run's final evaluation short.
    data = dataclasses.replace(
        data,
        evals={"test": (x_test[: config.global_batch_size], y_test[: config.global_batch_size])},
    )
    steps = 2 if FLAGS.smoke else FLAGS.steps
    logging.info(
        "measuring %s: batch %d, augment=%s on %s",
        FLAGS.trainer,
        config.global_batch_size,
        exp.augment,
        exp.augment_on,
    )
    in_alone = input_alone(exp, config, data, steps)
    step_alone = trained(exp, config, dataclasses.replace(data, synthetic=True), steps)[
        "examples_per_sec"
    ]
    both = trained(exp, config, data, steps)
    bound = "input" if in_alone < step_alone else "step"
    summary = {
        "trainer": FLAGS.trainer,
        "recipe": recipe or "(defaults)",
        "model": exp.model,
        "widths": exp.widths,
        "global_batch_size": config.global_batch_size,
        "mixed_precision": config.mixed_precision,
        "input_alone_examples_per_sec": in_alone,
        "step_alone_examples_per_sec": step_alone,
        "combined_examples_per_sec": both["examples_per_sec"],
        "bound": bound,
        "efficiency": both["examples_per_sec"] / min(in_alone, step_alone),
        "combined_input_wait_fraction": both["input_wait_fraction"],
    }
    rows = [
        {
            "setting": "default pipeline",
            "input alone ex/s": in_alone,
            "combined ex/s": both["examples_per_sec"],
            "input wait": both["input_wait_fraction"],
        }
    ]
    if FLAGS.sweep:
        variants = {
            "map num_parallel_calls=1": (exp, dict(num_parallel_calls=1)),
            "no prefetch": (exp, dict(prefetch=0)),
            "prefetch=1": (exp, dict(prefetch=1)),
            "augment on host (tf.data)": (dataclasses.replace(exp, augment_on="host"), {}),
        }
        for name, (variant_exp, pipeline) in variants.items():
            found = trained(variant_exp, config, data, steps, **pipeline)
            rows.append(
                {
                    "setting": name,
                    "input alone ex/s": input_alone(variant_exp, config, data, steps, **pipeline),
                    "combined ex/s": found["examples_per_sec"],
                    "input wait": found["input_wait_fraction"],
                }
            )
            logging.info("%s: %s", name, rows[-1])
    run = f"python -m trainers.{FLAGS.trainer}" + (f" --recipe={recipe}" if recipe else "")
    if FLAGS.smoke:
        summary["smoke"] = True
    write_report(
        out,
        title=f"Input pipeline versus step: {run[len('python -m ') :]}",
        summary=summary,
        rows=rows,
        columns=["setting", "input alone ex/s", "combined ex/s", "input wait"],
        setup={
            **machine_setup(),
            "command": f"python -m benchmarks.input_vs_step --trainer={FLAGS.trainer} "
            f"--recipe={FLAGS.recipe}" + (" --smoke" if FLAGS.smoke else ""),
            "experiment": exp.to_dict(),
            "timed steps": steps,
            "train config": {k: v for k, v in config.to_dict().items() if k != "model_dir"},
            "step alone": "--synthetic_data: one random batch, repeated",
        },
        notes=(
            "SMOKE RUN: a few steps on a few examples, the figures mean nothing.\n\n"
            if FLAGS.smoke
            else ""
        )
        + (
            f"The trainer as `{run}` trains: model "
            f"{exp.model}{f' (widths {exp.widths})' if exp.widths else ''}, batch "
            f"{config.global_batch_size}, augment {exp.augment} on the {exp.augment_on}, "
            f"mixed precision {config.mixed_precision}. The cache question does not arise "
            "here: loaders decode once (the CIFAR JPEGs are decoded in parallel and "
            "cached as pixels), so the map only gathers whole batches."
        ),
        plots={
            "breakdown.png": bar_plot(
                ["input alone", "step alone", "combined"],
                [in_alone, step_alone, both["examples_per_sec"]],
                ylabel="examples/s",
                title=f"{FLAGS.trainer}: bound by {bound}",
            ),
            "sweep.png": bar_plot(
                [r["setting"] for r in rows],
                [r["combined ex/s"] for r in rows],
                ylabel="combined examples/s",
                title="pipeline settings",
            ),
        },
    )
    print(
        f"input alone {in_alone:,.0f} ex/s | step alone {step_alone:,.0f} ex/s | combined "
        f"{both['examples_per_sec']:,.0f} ex/s | {bound}-bound | efficiency "
        f"{summary['efficiency']:.3f} | report: {out}"
    )


if __name__ == "__main__":
    app.run(main)
