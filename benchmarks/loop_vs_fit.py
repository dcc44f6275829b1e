"""Our compiled loop versus Keras `fit` on the same model and data, in one process.

    python -m benchmarks.loop_vs_fit --model=mlp --out=DIR

Both train for two epochs over the same examples; the second epoch is timed (the first one traces
and compiles). Ours runs through the trainers' own code path (`run_experiment`, augmentation off);
`fit` runs with default settings and with its best settings (the fastest of steps_per_execution x
jit_compile). Writes DIR/report.json, report.md and a bar plot.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from benchmarks.report import bar_plot, machine_setup, mean_std, write_report  # noqa: E402
from framework import TrainConfig  # noqa: E402
from trainers.experiment import ExperimentConfig, load_data, run_experiment  # noqa: E402
from trainers.models import build_model  # noqa: E402

SETUPS = {  # model -> (dataset, widths, examples per epoch, batch)
    "mlp": ("mnist", (64, 64), 60000, 32),
    "cnn": ("mnist", (), 16384, 32),
    "resnet9": ("cifar10", (16, 32, 64, 128), 4096, 32),
}
flags.DEFINE_enum("model", "mlp", list(SETUPS), "Model to compare.")
flags.DEFINE_string("out", "", "Report folder (default benchmarks/reports/loop_vs_fit/<model>).")
flags.DEFINE_integer("repeats", 2, "Timed runs of each contender (alternating), for mean and std.")
flags.DEFINE_integer("examples", 0, "Examples per epoch (0: the model's default).")
flags.DEFINE_integer("batch_size", 0, "Batch size (0: the model's default).")
FLAGS = flags.FLAGS


def ours(model_name, widths, dataset, examples, batch):
    """Steps/s of the trainers' code path over epoch 2 (loop times only, host syncs included)."""
    loops = []
    exp = ExperimentConfig(
        dataset=dataset, model=model_name, widths=widths, optimizer="adam", train_examples=examples
    )
    config = TrainConfig(
        global_batch_size=batch, epochs=2, learning_rate=1e-3, export=False, steps_per_loop=1000
    )
    run_experiment(
        exp, config, hooks=[lambda info: loops.append((info.epoch, info.steps, info.seconds))]
    )
    timed = [(s, t) for epoch, s, t in loops if epoch == 2]
    return sum(s for s, _ in timed) / sum(t for _, t in timed)


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def fit(model_name, widths, x, y, batch, num_classes, **compile_options):
    """Steps/s of `model.fit` over epoch 2, with the given compile options."""
    model = build_model(
        model_name, input_shape=x.shape[1:], num_classes=num_classes, widths=widths or None, seed=0
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_options,
    )
    timer = _EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0, callbacks=[timer], shuffle=True)
    return (len(x) // batch + (len(x) % batch > 0)) / timer.seconds


def main(_):
    dataset, widths, examples, batch = SETUPS[FLAGS.model]
    examples, batch = FLAGS.examples or examples, FLAGS.batch_size or batch
    out = FLAGS.out or os.path.join(
        os.path.dirname(__file__), "reports", "loop_vs_fit", FLAGS.model
    )
    data, ds = load_data(
        ExperimentConfig(dataset=dataset, model=FLAGS.model, train_examples=examples), 0
    )
    x = data.train[0].astype(np.float32) / 255.0  # what fit users pass: float arrays in [0, 1]
    y = data.train[1]
    fit_settings = {
        "fit default": {},
        "fit spe=100": dict(steps_per_execution=100, jit_compile=False),
        "fit spe=100 jit": dict(steps_per_execution=100, jit_compile=True),
        "fit spe=1000": dict(steps_per_execution=1000, jit_compile=False),
    }
    runs = {"ours": [], **{name: [] for name in fit_settings}}
    for repeat in range(FLAGS.repeats):  # alternate contenders so drift on a noisy machine hits all
        runs["ours"].append(ours(FLAGS.model, widths, dataset, examples, batch))
        for name, options in fit_settings.items():
            runs[name].append(fit(FLAGS.model, widths, x, y, batch, ds.num_classes, **options))
        logging.info("repeat %d: %s", repeat, {k: round(v[-1], 1) for k, v in runs.items()})
    stats = {name: mean_std(values) for name, values in runs.items()}
    best_fit = max((n for n in fit_settings if n != "fit default"), key=lambda n: stats[n][0])
    summary = {
        "model": FLAGS.model,
        "batch_size": batch,
        "examples_per_epoch": len(x),
        "ours_steps_per_sec": stats["ours"][0],
        "fit_default_steps_per_sec": stats["fit default"][0],
        "fit_best_steps_per_sec": stats[best_fit][0],
        "fit_best_setting": best_fit,
        "speedup_vs_fit_default": stats["ours"][0] / stats["fit default"][0],
        "speedup_vs_fit_best": stats["ours"][0] / stats[best_fit][0],
    }
    rows = [
        {
            "contender": name,
            "steps/s mean": m,
            "steps/s std": s,
            "runs": len(runs[name]),
            "vs ours": stats["ours"][0] / m,
        }
        for name, (m, s) in stats.items()
    ]
    names = list(stats)
    write_report(
        out,
        title=f"Our loop vs Keras fit: {FLAGS.model}, batch {batch}",
        summary=summary,
        rows=rows,
        columns=["contender", "steps/s mean", "steps/s std", "runs", "vs ours"],
        setup={
            **machine_setup(),
            "dataset": dataset,
            "widths": widths,
            "command": " ".join(
                ["python -m benchmarks.loop_vs_fit", f"--model={FLAGS.model}"]
                + [
                    f"--{name}={FLAGS[name].value}"
                    for name in ("examples", "batch_size", "repeats")
                    if FLAGS[name].present
                ]
            ),
            "timing": "second of two epochs; ours: train-loop time (eval/checkpoints excluded)",
        },
        plots={
            "throughput.png": bar_plot(
                names,
                [stats[n][0] for n in names],
                errors=[stats[n][1] for n in names],
                ylabel="steps/s",
                title=f"{FLAGS.model}: steps per second",
            )
        },
    )
    print(
        f"{FLAGS.model}: ours {summary['ours_steps_per_sec']:.0f} steps/s | fit default "
        f"{summary['fit_default_steps_per_sec']:.0f} | fit best ({best_fit}) "
        f"{summary['fit_best_steps_per_sec']:.0f} | speedup vs default "
        f"{summary['speedup_vs_fit_default']:.2f}x, vs best "
        f"{summary['speedup_vs_fit_best']:.2f}x | report: {out}"
    )


if __name__ == "__main__":
    app.run(main)
