"""The course notebooks' experiments, each as the one command that reproduces it (issue 17's table).

    python -m benchmarks.notebook_experiments [--only=NAME,...] [--out=DIR] [--smoke]   # about 10 min on 2 cores

Runs every command below one after the other, as a user types it (`python -m trainers.X ...` in a
fresh process, on the shared data), and writes DIR/report.md + report.json (default
benchmarks/reports/notebook_experiments/): the command, the figure it produced, its wall time. The
notebooks' own figures are not in this checkout (only their descriptions, in issue 17), so the
column for them says what the notebook measured, not a number. Datasets missing offline are stood in
for and said so: Fashion-MNIST by MNIST (the same command with trainers.fashion_mnist), the beans
folders by a 3-class image folder written from CIFAR-10, the FEC faces by MNIST triplets. `--smoke`
runs each on a few hundred examples (the test's mode: every command still parses, trains and writes
its figure).
"""  # noqa: E501

import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from benchmarks.report import ROOT, machine_setup, write_report

flags.DEFINE_string("out", "", "Report folder (default benchmarks/reports/notebook_experiments).")
flags.DEFINE_string(
    "work_dir",
    "",
    "Where the runs go (default runs/notebook_experiments, or OUT/runs with --smoke; "
    "kept, so each can be inspected).",
)
flags.DEFINE_list("only", [], "Run only these experiments (names in the table).")
flags.DEFINE_bool(
    "smoke",
    False,
    "A few hundred examples and one epoch each: checks the commands, not the figures.",
)
FLAGS = flags.FLAGS

MODEL_WITH_AUGMENT_LAYER = '''\
import keras
from augment.layers import Augment


def build(input_shape, num_classes):
    """The notebooks' model with augmentation as its first layers (RandomFlip/RandomCrop/cutout there)."""
    return keras.Sequential([keras.Input(input_shape), Augment("crop_to:size=24,shear:max_degrees=10"),
                             keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
                             keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
                             keras.layers.Flatten(), keras.layers.Dense(num_classes)])
'''  # noqa: E501

EVERY_HOOK_CALLBACK = '''\
import json
import os

import keras

HOOKS = [f"on_{stage}_{when}" for stage in ("train", "epoch", "train_batch", "test", "test_batch",
                                             "predict", "predict_batch") for when in ("begin", "end")]


class EveryHook(keras.callbacks.Callback):
    """The notebooks' custom callback with every hook: it counts each call and prints the epoch ends."""

    def __init__(self):
        super().__init__()
        self.calls = dict.fromkeys(HOOKS, 0)
        for hook in HOOKS:
            setattr(self, hook, self._counter(hook))

    def _counter(self, hook):
        def called(*args, **kwargs):
            self.calls[hook] += 1
            if hook == "on_epoch_end":
                logs = kwargs.get("logs", args[1] if len(args) > 1 else None) or {}
                print(f"epoch {args[0]}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())))
            if hook == "on_train_end":  # the counts, for the report's table
                out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "every_hook", "hooks.json")
                with open(out, "w") as f:
                    json.dump(self.calls, f)
        return called


def callbacks():
    return [EveryHook()]
'''  # noqa: E501

# The cifar trainer's defaults are airbench's recipe (SGD, label smoothing, TTA, bf16, a time
# budget); the notebooks' Keras CNNs train with none of it, so their commands say so.
PLAIN_KERAS = (
    "--optimizer=adam --learning_rate=1e-3 --lr_schedule=constant --label_smoothing=0 "
    "--weight_decay=0 --notta --mixed_precision=none --global_batch_size=64 --augment=none "
    "--train_minutes=0"
)
# name -> (the notebook and what it measures, module, flags, the result.json (or repeats.json) keys
# to report); {work} is the work folder, {plain} PLAIN_KERAS.
EXPERIMENTS = [
    (
        "mlp",
        "MNIST intro: an MLP, 1 hidden layer of 128",
        "trainers.mnist",
        "--model=mlp --widths=128 --epochs=5",
        ["test_accuracy"],
    ),
    (
        "linear",
        "gradient descent: a linear model (no hidden layer), plain SGD",
        "trainers.mnist",
        "--model=mlp --widths=0 --optimizer=sgd --learning_rate=0.5 --epochs=5",
        ["test_accuracy"],
    ),
    (
        "cnn",
        "MNIST CNN: two convs, same padding, pool after each, no hidden dense layer",
        "trainers.mnist",
        "--model=cnn --widths=32,64 --dense_widths=0 --padding=same --pool=every --epochs=3",
        ["test_accuracy"],
    ),
    (
        "variants",
        "one factor at a time: more layers, a sigmoid inside (2 repeats each)",
        "trainers.mnist",
        "--model=mlp --widths=64,64 --epochs=3 --repeats=2 "
        "--variants='baseline:;more_layers:widths=64,64,64,64;sigmoid_inside:activation=relu,sigmoid'",
        ["variants"],
    ),
    (
        "flipped_digits",
        "train upright, test on upside-down digits",
        "trainers.mnist",
        "--model=cnn --epochs=3 --eval_transforms=flip_ud --plot",
        ["test_accuracy", "test_flip_ud_accuracy"],
    ),
    (
        "stop_at_loss",
        "Fashion-MNIST's stop-at-loss callback (MNIST here: no Fashion-MNIST offline)",
        "trainers.mnist",
        "--model=mlp --widths=128 --epochs=20 --target='loss<=0.05'",
        ["stop_reason", "train_steps", "test_accuracy"],
    ),
    (
        "every_hook",
        "a custom callback with every hook (keras.callbacks.Callback), in our compiled loop",
        "trainers.mnist",
        "--model=mlp --widths=128 --epochs=3 --callbacks={work}/every_hook_callback.py:callbacks",
        ["test_accuracy", "hooks"],
    ),
    (
        "binary",
        "3 vs 5: one sigmoid logit, binary cross-entropy",
        "trainers.mnist",
        "--task=binary --classes=3,5 --model=mlp --widths=64 --epochs=3",
        ["test_accuracy"],
    ),
    (
        "regression",
        "the digit's value by regression, MAE",
        "trainers.mnist",
        "--task=regression --loss=mae --model=mlp --widths=128 --epochs=3",
        ["test_mae"],
    ),
    (
        "test_halves",
        "two evaluation splits (the test set's halves), and before training",
        "trainers.mnist",
        "--model=mlp --widths=128 --epochs=3 --eval_splits=test_a,test_b --eval_at_start --plot",
        ["test_a_accuracy", "test_b_accuracy"],
    ),
    (
        "repeats",
        "repeated runs and their ensembles (5 seeds)",
        "trainers.mnist",
        "--model=mlp --widths=64 --epochs=2 --repeats=5",
        ["test_accuracy_mean", "test_accuracy_std", "ensemble_logits_accuracy"],
    ),
    (
        "image_data_generator",
        "ImageDataGenerator / albumentations: shift-scale-rotate p=0.7, shear, brightness",
        "trainers.mnist",
        "--model=cnn --epochs=3 "
        "--augment='affine:max_degrees=10,prob=0.7,shear:max_degrees=20,brightness_scale:factors=(0.8,1.2)'",
        ["test_accuracy"],
    ),
    (
        "augment_in_model",
        "augmentation as layers inside the model (crop to 24, shear)",
        "trainers.mnist",
        "--model={work}/augmented_model.py:build --epochs=3",
        ["test_accuracy"],
    ),
    (
        "batchnorm_dropout",
        "CIFAR-10 CNN with BatchNorm and Dropout, against the plain CNN (10,000 images)",
        "trainers.cifar",
        "--model=cnn --widths=32,64,128 --dense_widths=128 --padding=same --pool=every "
        "--train_examples=10000 --epochs=5 {plain} "
        "--variants='plain:;batchnorm:model=cnn_bn;batchnorm_dropout:model=cnn_bn dropout=0.3'",
        ["variants"],
    ),
    (
        "transfer_stage1",
        "transfer learning, stage 0: a backbone trained on CIFAR-10",
        "trainers.cifar",
        "--model=cnn_bn --widths=32,64,128 --dense_widths=128 --padding=same --pool=every "
        "--epochs=3 {plain}",
        ["test_accuracy"],
    ),
    (
        "transfer_head",
        "stage 1: the frozen backbone, a new head, on a 3-class image folder (beans stand-in)",
        "trainers.cifar",
        "--dataset=image_folder --data_dir={work}/folder --init_from={work}/transfer_stage1 "
        "--freeze_backbone --model=cnn_bn --widths=32,64,128 --dense_widths=128 "
        "--padding=same --pool=every --epochs=5 {plain}",
        ["test_accuracy"],
    ),
    (
        "transfer_finetune",
        "stage 2: unfreeze everything, fine-tune at a 10x lower LR",
        "trainers.cifar",
        "--dataset=image_folder --data_dir={work}/folder --init_from={work}/transfer_head "
        "--model=cnn_bn --widths=32,64,128 --dense_widths=128 --padding=same --pool=every "
        "--epochs=5 {plain} --learning_rate=1e-4",
        ["test_accuracy"],
    ),
    (
        "triplet",
        "the vote-weighted triplet loss with AdaBound and dropout (MNIST triplets: no FEC offline)",
        "trainers.triplet",
        "--dataset=mnist --optimizer=adabound --dropout=0.2 --steps_per_epoch=200 --epochs=3 "
        "--plot",
        ["test_triplet_accuracy"],
    ),
]
SMOKE = {
    "trainers.mnist": "--train_examples=512 --test_examples=256 --epochs=1",
    "trainers.cifar": "--train_examples=512 --test_examples=256 --epochs=1",
    "image_folder": "--epochs=1",
    "trainers.triplet": "--num_train=512 --num_test=256 --steps_per_epoch=4 --epochs=1",
}


def write_inputs(work: str, smoke: bool) -> None:
    """The model file with augmentation layers, and a 3-class image folder (CIFAR's airplane, cat,
    ship test images as PNGs in train/ and test/, as the beans folders are laid out)."""
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "augmented_model.py"), "w") as f:
        f.write(MODEL_WITH_AUGMENT_LAYER)
    with open(os.path.join(work, "every_hook_callback.py"), "w") as f:
        f.write(EVERY_HOOK_CALLBACK)
    folder = os.path.join(work, "folder")
    if os.path.isdir(folder):
        return
    import tensorflow as tf

    from framework.data import datasets

    ds = datasets.load("cifar10")
    per_class = {"train": 60 if smoke else 600, "test": 20 if smoke else 200}
    for split, (images, labels) in (
        ("train", (ds.x_train, ds.y_train)),
        ("test", (ds.x_test, ds.y_test)),
    ):
        for name, label in (("airplane", 0), ("cat", 3), ("ship", 8)):
            os.makedirs(os.path.join(folder, split, name), exist_ok=True)
            for i, image in enumerate(
                images[np.asarray(labels).reshape(-1) == label][: per_class[split]]
            ):
                tf.io.write_file(
                    os.path.join(folder, split, name, f"{i}.png"), tf.io.encode_png(image)
                )


def figure(result: dict, keys) -> str:
    parts = []
    for key in keys:
        if key == "variants":
            parts += [f"{name}: {value:.4f}" for name, value in result.get("variants", {}).items()]
        elif key in result:
            value = result[key]
            parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
        else:
            parts.append(f"{key} missing")
    return "; ".join(parts)


def read_result(run_dir: str) -> dict:
    """result.json of a run; for --variants, each variant's mean test accuracy (from its summary or
    runs)."""
    path = next(
        (
            os.path.join(run_dir, f)
            for f in ("result.json", "repeats.json")
            if os.path.exists(os.path.join(run_dir, f))
        ),
        "",
    )
    if path:
        with open(path) as f:
            result = json.load(f)
    else:
        result = {}
    variants = {}
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else ():
        sub = os.path.join(run_dir, name)
        summary = next(
            (
                os.path.join(sub, f)
                for f in ("repeats.json", "result.json")
                if os.path.exists(os.path.join(sub, f))
            ),
            None,
        )
        if os.path.isdir(sub) and summary and not path:
            with open(summary) as f:
                found = json.load(f)
            value = found.get("test_accuracy_mean", found.get("test_accuracy"))
            if isinstance(value, (int, float)):
                variants[name] = float(value)
    if variants:
        result["variants"] = variants
    if os.path.exists(os.path.join(run_dir, "hooks.json")):  # every_hook: how often each hook ran
        with open(os.path.join(run_dir, "hooks.json")) as f:
            result["hooks"] = ", ".join(f"{k} x{n}" for k, n in json.load(f).items() if n)
    return result


def main(argv):
    del argv
    out = FLAGS.out or os.path.join(ROOT, "benchmarks", "reports", "notebook_experiments")
    work = FLAGS.work_dir or (
        os.path.join(out, "runs")
        if FLAGS.smoke
        else os.path.join(ROOT, "runs", "notebook_experiments")
    )
    write_inputs(work, FLAGS.smoke)
    rows, failed = [], []
    chosen = [e for e in EXPERIMENTS if not FLAGS.only or e[0] in FLAGS.only]
    for name, notebook, module, args, keys in chosen:
        run_dir = os.path.join(work, name)
        args = args.format(work=work, plain=PLAIN_KERAS)
        if FLAGS.smoke:
            args += " " + SMOKE["image_folder" if "image_folder" in args else module]
        command = f"python -m {module} {args} --model_dir={run_dir}"
        start = time.time()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                module,
                *shlex.split(args),
                f"--model_dir={run_dir}",
                "--fresh_start",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        seconds = time.time() - start
        if proc.returncode:
            failed.append(name)
            print(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
        result = read_result(run_dir)
        rows.append(
            {
                "experiment": name,
                "notebook": notebook,
                "command": f"`{command}`",
                "figure": figure(result, keys)
                if not proc.returncode
                else f"exit {proc.returncode}",
                "wall s": round(seconds),
            }
        )
        print(f"{name}: {rows[-1]['figure']} ({seconds:.0f} s)", flush=True)
    notes = (
        "Each command as a user types it, run one after the other in fresh processes. The "
        "notebooks' own figures are not in this checkout (issue 17 describes the "
        "experiments, not their numbers), so there is no column for them. Stand-ins: MNIST "
        "for Fashion-MNIST (`trainers.fashion_mnist` takes the same flags, with internet), "
        "a 3-class CIFAR-10 image folder for beans (no ImageNet weights offline: stage 0 "
        "is our own CIFAR backbone), MNIST triplets for FEC (`--dataset=fec --fec_csv=F "
        "--fec_images=DIR` with the faces)."
        + (" SMOKE RUN: a few hundred examples, figures meaningless." if FLAGS.smoke else "")
    )
    write_report(
        out,
        title="The course notebooks' experiments, one command each",
        summary={"experiments": len(rows), "failed": failed},
        rows=rows,
        columns=["experiment", "notebook", "command", "figure", "wall s"],
        setup=machine_setup(),
        notes=notes,
    )
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    app.run(main)
