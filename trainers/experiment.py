"""An image-classification experiment: data, model, optimizer and augmentation, run by the engine.

`ExperimentConfig` holds what a trainer adds on top of the engine's `TrainConfig`; both are frozen
dataclasses validated before any data is read or model built. `run_experiment` is what every image
trainer (`trainers.mnist`, `trainers.fashion_mnist`, `trainers.cifar`) calls, from a notebook too.
"""

import dataclasses
import os

import numpy as np

import framework
from framework import ConfigError, TrainConfig
from framework.config import option

AUGMENT_WHERE = ("device", "host")
FILE_DATASETS = ("image_folder", "tfrecords")  # the user's own data, read from --data_dir
EVAL_TRANSFORMS = ("flip_ud", "flip_lr", "rot90", "invert")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    # Data.
    dataset: str = option(
        "mnist",
        "A named dataset (mnist, fashion_mnist, cifar10, cifar100, ...), or "
        "image_folder / tfrecords with --data_dir.",
    )
    data_dir: str = option(
        "",
        "Dataset folder ('' = $DATA_DIR, else ~/.keras/datasets, else download); "
        "the folder to read for image_folder / tfrecords.",
    )
    on_corrupt: str = option(
        "fail",
        "image_folder: 'skip' skips (and counts) undecodable images; 'fail' stops.",
        advanced=True,
    )
    max_image_pixels: int = option(
        89_478_485,
        "image_folder: a file whose header says more pixels is refused "
        "before decoding (Pillow's bomb limit); 0 = no limit.",
        advanced=True,
    )
    data_in_memory: str = option(
        "auto",
        "image_folder / tfrecords: 'yes' decodes all into memory, 'no' streams "
        "from disk while training, 'auto' streams above 2 GB decoded.",
        advanced=True,
    )
    classes: tuple = option(
        (), "Keep only these class ids, re-indexed 0..N-1, e.g. --classes=3,5.", advanced=True
    )
    train_examples: int = option(0, "Train on a random subset of N examples (0 = all).")
    test_examples: int = option(
        0,
        "Score on a fixed random test subset of N examples, the same for every "
        "seed (0 = all): quicker, noisier evaluation.",
    )
    image_size: int = option(0, "Resize images to N x N (0 = native).", advanced=True)
    validation_split: float = option(
        0.0, "Hold out this fraction of the training set as 'val'.", advanced=True
    )
    synthetic_data: bool = option(
        False, "Random data of the dataset's shape: time the step without real data.", advanced=True
    )
    permute_pixels: int = option(
        -1, ">= 0: one fixed pixel permutation (seeded by N) for train and test.", advanced=True
    )
    # Model.
    model: str = option(
        "cnn",
        "Model name: mlp, cnn, cnn_bn, cnn_dropout, resnet9, airbench, efficientnet_b0, "
        "efficientnetv2_b0 (trainers/models.py); or your own: path/to/file.py:function or "
        "package.module:function, called as fn(input_shape=(H, W, C), num_classes=N) and returning a "
        "Keras model of float logits (batch, N); or path/to/saved.keras to fine-tune (trainers/model_source.py).",
    )
    widths: tuple = option(
        (),
        "Layer widths, e.g. --widths=64,64 ('' = the model's own). cnn*: the 3x3 convs' "
        "filters, any number (--dense_widths: the Dense layers after them); mlp: the hidden "
        "layers, 0 = none (a linear model).",
    )
    dense_widths: tuple = option(
        (),
        "cnn*: hidden Dense units after the convs, e.g. --dense_widths=128,64 "
        "('' = 64; 0 = none: the logits follow the convs).",
    )
    padding: str = option("", "cnn*: the convs' padding, valid or same ('' = valid).")
    pool: str = option(
        "",
        "cnn*: 2x2 max-pools after: every conv, none, or the convs numbered, e.g. --pool=1,2 "
        "('' = after every conv but the last).",
    )
    activation: str = option(
        "",
        "Keras activation name ('' = the model's own: relu; gelu for airbench); mlp and "
        "cnn*: also one per layer, e.g. --activation=relu,sigmoid.",
    )
    init_from: str = option(
        "",
        "Warm start: a run directory (its model.keras, else its latest checkpoint) or a .keras "
        "file; every weight must fit --model's, except a head of another size (new). Staged "
        "fine-tuning: run 1 with --freeze_backbone, run 2 --init_from=run 1 at a lower LR.",
    )
    dropout: float = option(0.0, "Dropout rate (cnn_dropout: 0.25 unless given).")
    pretrained: bool = option(False, "efficientnet*: start from ImageNet weights.", advanced=True)
    freeze_backbone: bool = option(
        False,
        "Train only the head (the last layer with weights): linear probing, "
        "or the first stage of fine-tuning (any model, --init_from, .keras).",
        advanced=True,
    )
    sync_batchnorm: bool = option(
        False, "BatchNorm statistics over the global batch instead of per replica.", advanced=True
    )
    # Optimizer and loss.
    optimizer: str = option(
        "adam", "Optimizer: sgd, adam, adamw, lamb, rmsprop, lion (trainers/optimizers.py)."
    )
    momentum: float = option(
        0.0, "sgd, rmsprop: momentum (Keras' default 0; the cifar recipes: 0.85)."
    )
    nesterov: bool = option(False, "sgd: Nesterov momentum.")
    weight_decay: float = option(
        0.0,
        "Decoupled weight decay per unit of LR (Keras' AdamW-style, every "
        "optimizer, every variable).",
    )
    label_smoothing: float = option(0.0, "Cross-entropy label smoothing in [0, 1).")
    task: str = option(
        "classification",
        "classification (softmax over the classes), binary (one sigmoid logit, "
        "labels 0/1, e.g. --classes=3,5) or regression (the label as a number, one output; metric mae).",
    )
    loss: str = option("", "--task=regression: mse or mae ('' = mse).")
    input_range: str = option(
        "0,1",
        "The pixels' range the model sees, in training and evaluation alike: 0,1, "
        "-0.5,0.5 or -1,1.",
    )
    # Augmentation and evaluation.
    augment: str = option(
        "none",
        "On-device augmentation: a named policy (none, flip_crop, standard, strong) "
        "or a spec like 'flip,crop:padding=4' (preview: python -m augment.preview).",
    )
    augment_on: str = option(
        "device",
        "'device': in the compiled step; 'host': in the tf.data map on the CPU.",
        advanced=True,
    )
    alternating_flip: bool = option(
        False,
        "airbench's flip: each image mirrored every other epoch (in the "
        "input pipeline; replaces the random flip of --augment).",
    )
    tta: bool = option(
        False, "Test-time augmentation: mean logits of each test image and its mirror."
    )
    tta_translate: int = option(
        0, "With --tta: also the images shifted by this many pixels (airbench: 1)."
    )
    eval_transforms: tuple = option(
        (),
        "Also score the test set under these transforms: flip_ud, flip_lr, rot90, invert.",
        advanced=True,
        item=str,
    )
    plot: bool = option(
        False,
        "Write curves.png (rewritten at each evaluation) and activations.png into "
        "--model_dir; with --predictions also confusion_matrix.png and wrong_predictions.png.",
        advanced=True,
    )
    predictions: bool = option(
        True,
        "After training, the test set's predictions: predictions.npz in --model_dir "
        "(logits, labels, indices; logits_<transform> per --eval_transforms) and "
        "per_class_accuracy in result.json.",
        advanced=True,
    )
    train_minutes: float = option(
        0.0, "> 0: time the step, then train what fits in N minutes here (at most --epochs)."
    )
    budget_ladder: bool = option(
        False,
        "With --train_minutes: also pick the net, the largest rung (widths x "
        "epochs) of trainers/time_budget.py's ladder that fits (the cifar fast recipe's; "
        "off when --widths or --epochs is given).",
        advanced=True,
    )

    def __post_init__(self):
        from framework.data import datasets
        from trainers import models, optimizers

        _choice("dataset", self.dataset, datasets.DATASETS + FILE_DATASETS)
        _choice("on_corrupt", self.on_corrupt, ("fail", "skip"))
        _choice("data_in_memory", self.data_in_memory, ("auto", "yes", "no"))
        if self.max_image_pixels < 0:
            raise ConfigError(
                f"--max_image_pixels={self.max_image_pixels}: give a pixel count, or 0 for no limit"
            )
        if self.data_in_memory == "no" and self.dataset not in FILE_DATASETS:
            raise ConfigError(
                f"--data_in_memory=no streams files: it needs --dataset=image_folder or tfrecords, "
                f"not --dataset={self.dataset} (a named dataset is held in memory)"
            )
        if self.dataset in FILE_DATASETS and not self.data_dir:
            raise ConfigError(
                f"--dataset={self.dataset} needs --data_dir=PATH (the folder to read)"
            )
        from trainers import model_source

        model_source.check(
            self.model
        )  # a built-in name, or a file / module function / .keras that exists
        _choice("optimizer", self.optimizer, optimizers.OPTIMIZERS)
        _choice("augment_on", self.augment_on, AUGMENT_WHERE)
        for name in self.eval_transforms:
            _choice("eval_transforms", name, EVAL_TRANSFORMS)
        if self.augment != "none":
            import augment

            try:
                policy = augment.get_policy(self.augment, num_classes=10, image_shape=(32, 32, 3))
            except ValueError as err:
                raise ConfigError(f"--augment={self.augment!r}: {err}") from err
            if policy.soft_labels and self.task == "regression":
                raise ConfigError(
                    f"--augment={self.augment!r} mixes labels (mixup/cutmix): not for --task=regression"
                )
            if normalize_steps(policy) and self.input_range != "0,1":
                raise ConfigError(
                    f"--augment={self.augment!r} normalizes and --input_range={self.input_range} rescales "
                    "the pixels: give one of them"
                )
            if self.alternating_flip and any(
                name in ("flip", "random_flip_lr") for name, _ in policy.steps
            ):
                raise ConfigError(
                    f"--alternating_flip replaces the random flip of --augment={self.augment!r}: "
                    "give an --augment without it (e.g. crop:padding=2), or --noalternating_flip"
                )
        for name in ("train_examples", "test_examples", "image_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be >= 0")
        for name in ("widths", "dense_widths"):
            widths = getattr(self, name)
            if any(w < 0 for w in widths) or 0 in widths and tuple(widths) != (0,):
                raise ConfigError(
                    f"--{name}={','.join(map(str, widths))}: widths must be positive "
                    "(or 0 alone: no hidden layer)"
                )
        if self.train_minutes < 0:
            raise ConfigError(
                f"--train_minutes={self.train_minutes}: must be >= 0 (0: train --epochs)"
            )
        from trainers.time_budget import LADDERS

        if self.budget_ladder and self.model not in LADDERS:
            raise ConfigError(
                f"--budget_ladder: no ladder for --model={self.model} (only {', '.join(LADDERS)})"
            )
        if self.tta_translate < 0 or self.tta_translate and not self.tta:
            raise ConfigError(
                f"--tta_translate={self.tta_translate}: must be >= 0, and needs --tta"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout={self.dropout}: must be in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label_smoothing={self.label_smoothing}: must be in [0, 1)")
        if not 0.0 <= self.validation_split < 1.0:
            raise ConfigError(f"--validation_split={self.validation_split}: must be in [0, 1)")
        if len(set(self.classes)) != len(self.classes) or any(c < 0 for c in self.classes):
            raise ConfigError(
                f"--classes={','.join(map(str, self.classes))}: must be distinct class ids >= 0"
            )
        if self.classes and len(self.classes) < 2:
            raise ConfigError(f"--classes={self.classes[0]}: keep at least two classes")
        _check_task(self)
        model_source.check_init_from(self.init_from)
        if model_source.is_custom(self.model):
            for name in (
                "widths",
                "dense_widths",
                "padding",
                "pool",
                "activation",
                "pretrained",
                "dropout",
            ):
                if getattr(self, name):
                    raise ConfigError(
                        f"--{name} applies to the built-in models, not to "
                        f"--model={model_source.describe(self.model)} (your model sets its own)"
                    )
        else:
            # What the model builder would refuse, before anything is built (the image size again once
            # the data is loaded: run_experiment).
            for name, value, shown in (
                ("widths", self.widths, ",".join(map(str, self.widths))),
                ("dense_widths", self.dense_widths, ",".join(map(str, self.dense_widths))),
                ("padding", self.padding, self.padding),
                ("pool", self.pool, self.pool),
                ("activation", self.activation, self.activation),
                ("pretrained", self.pretrained, ""),
                ("image_size", self.image_size, self.image_size),
            ):
                problem = models.options_error(self.model, **{name: value})
                if problem:
                    raise ConfigError(
                        f"--{name}{f'={shown}' if shown != '' else ''} with --model={self.model}: {problem}"
                    )
            problem = models.options_error(
                self.model, **architecture(self), image_size=self.image_size
            )
            if problem:
                raise ConfigError(f"--model={self.model} {describe_architecture(self)}: {problem}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"--momentum={self.momentum}: must be in [0, 1)")
        for (
            name,
            takers,
        ) in optimizers.TAKES_MOMENTUM.items():  # trainers/recipes.py drops a recipe's
            if getattr(self, name) and self.optimizer not in takers:
                raise ConfigError(
                    f"--{name}={getattr(self, name)} does not apply to --optimizer={self.optimizer} "
                    f"(only to {' and '.join(takers)})"
                )
        if self.weight_decay < 0:
            raise ConfigError(f"--weight_decay={self.weight_decay}: must be >= 0")
        if self.permute_pixels < -1:
            raise ConfigError(
                f"--permute_pixels={self.permute_pixels}: a seed >= 0, or -1 for none"
            )

    def to_dict(self) -> dict:
        from trainers import model_source

        return {
            **dataclasses.asdict(self),
            "model": model_source.describe(self.model),
        }  # a callable: its name


TASKS = ("classification", "binary", "regression")


def _check_task(exp: ExperimentConfig) -> None:
    """--task, --loss and --input_range, and what does not go with them."""
    from framework.tasks import INPUT_RANGES, RegressionTask

    _choice("task", exp.task, TASKS)
    _choice("input_range", exp.input_range, tuple(INPUT_RANGES))
    if exp.loss and exp.task != "regression":
        raise ConfigError(
            f"--loss={exp.loss} is for --task=regression (mse, mae); --task={exp.task} has its own"
        )
    if exp.loss:
        _choice("loss", exp.loss, RegressionTask.LOSSES)
    if exp.task == "binary" and exp.classes and len(exp.classes) != 2:
        raise ConfigError(
            f"--task=binary needs two classes, not --classes={','.join(map(str, exp.classes))}"
        )
    if exp.task == "regression":
        for name in ("label_smoothing", "eval_transforms"):
            if getattr(exp, name):
                raise ConfigError(f"--{name} is for classification, not --task=regression")
    if (
        exp.input_range != "0,1"
        and isinstance(exp.model, str)
        and exp.model.startswith("efficientnet")
    ):
        raise ConfigError(
            f"--input_range={exp.input_range}: {exp.model} normalises [0, 1] images itself; "
            "leave --input_range=0,1"
        )


def architecture(exp: ExperimentConfig) -> dict:
    """The built-in model's options as models.build_model / options_error take them (None: its own)."""
    return dict(
        widths=tuple(exp.widths) or None,
        dense_widths=tuple(exp.dense_widths) or None,
        padding=exp.padding or None,
        pool=exp.pool or None,
        activation=exp.activation or None,
    )


def describe_architecture(exp: ExperimentConfig) -> str:
    return " ".join(
        f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in architecture(exp).items()
        if v
    )


def _choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"--{name}={value!r}: unknown; valid choices: {', '.join(choices)}")


def load_data(exp: ExperimentConfig, seed: int):
    """Arrays after the user's subsets, as the engine's `Data`, plus the dataset description."""
    from framework.controller import Data
    from framework.data import datasets

    streamed = _streamed_files(exp, seed) if exp.dataset in FILE_DATASETS else None
    if streamed is not None:
        return streamed
    if exp.dataset == "image_folder":
        from framework.data.image_folder import load_image_folder

        ds = load_image_folder(
            exp.data_dir,
            image_size=exp.image_size or None,
            on_corrupt=exp.on_corrupt,
            max_image_pixels=exp.max_image_pixels,
            seed=seed,
        )
    elif exp.dataset == "tfrecords":
        from framework.data.tfrecords import load_tfrecord_dataset

        ds = load_tfrecord_dataset(exp.data_dir)
    else:
        ds = datasets.load(exp.dataset, exp.data_dir or None)
    ds = datasets.make_subsets(
        ds,
        classes=list(exp.classes) or None,
        train_examples=exp.train_examples or None,
        test_examples=exp.test_examples or None,
        image_size=exp.image_size or None,
        validation_split=exp.validation_split,
        seed=seed,
    )
    x_train, x_test, x_val = ds.x_train, ds.x_test, ds.x_val
    if exp.permute_pixels >= 0:
        x_train, x_test, x_val = (
            permute_pixels(x, exp.permute_pixels) if x is not None else None
            for x in (x_train, x_test, x_val)
        )
    evals = {"test": (x_test, ds.y_test)}
    if x_val is not None and len(x_val):
        evals["val"] = (x_val, ds.y_val)
    pipeline = {}
    if exp.alternating_flip:
        from augment.example_ops import alternating_flip

        pipeline["example_fn"] = alternating_flip(len(x_train), seed)
    return Data(
        train=(x_train, ds.y_train), evals=evals, synthetic=exp.synthetic_data, pipeline=pipeline
    ), ds


# What needs the training arrays in memory, by the option that asks for it.
_NEEDS_ARRAYS = {
    "classes": lambda e: e.classes,
    "train_examples": lambda e: e.train_examples,
    "test_examples": lambda e: e.test_examples,
    "validation_split": lambda e: e.validation_split,
    "permute_pixels": lambda e: e.permute_pixels >= 0,
    "synthetic_data": lambda e: e.synthetic_data,
    "eval_transforms": lambda e: e.eval_transforms,
    "train_minutes": lambda e: e.train_minutes,
    "alternating_flip": lambda e: e.alternating_flip and e.dataset == "tfrecords",
}


def _streamed_files(exp: ExperimentConfig, seed: int):
    """(Data of streamed sources, the listing) for --data_dir's files, or None where they go in memory
    (--data_in_memory; framework/data/streaming.py logs the choice in one line)."""
    from framework.controller import Data
    from framework.data import streaming

    if exp.dataset == "image_folder":
        from framework.data.image_folder import list_image_folder

        listed = list_image_folder(
            exp.data_dir,
            image_size=exp.image_size or None,
            on_corrupt=exp.on_corrupt,
            max_image_pixels=exp.max_image_pixels,
            seed=seed,
        )
    else:
        from framework.data.tfrecords import list_tfrecords

        listed = list_tfrecords(exp.data_dir, image_size=exp.image_size or None)
    if streaming.choose_in_memory(
        exp.data_in_memory, listed.decoded_bytes, f"{exp.dataset} {exp.data_dir}"
    ):
        return None
    for name, asks in _NEEDS_ARRAYS.items():
        if asks(exp):
            raise ConfigError(
                f"--{name} needs the data in memory, but --dataset={exp.dataset} streams from "
                f"--data_dir (--data_in_memory={exp.data_in_memory}): pass --data_in_memory=yes, "
                f"or drop --{name}"
            )
    train = listed.splits["train"]
    pipeline = {}
    if exp.alternating_flip:
        from augment.example_ops import alternating_flip

        pipeline["example_fn"] = alternating_flip(train.num_examples, seed)
    evals = {split: source for split, source in listed.splits.items() if split != "train"}
    return Data(train=train, evals=evals, pipeline=pipeline), listed


def first_images(source, n_or_exp) -> np.ndarray | None:
    """The first images of a source (arrays or streamed); given the ExperimentConfig, airbench's whitening
    images, or None for other models (nothing is read)."""
    from framework import input_pipeline

    if not isinstance(n_or_exp, int):
        if n_or_exp.model != "airbench":
            return None
        from trainers.airbench_net import WHITENING_IMAGES

        n_or_exp = WHITENING_IMAGES
    if isinstance(source, input_pipeline.StreamedSource):
        return source.head(n_or_exp)[0]
    return source[0][:n_or_exp]


def run_reading_files(controller, ds) -> dict:
    """controller.run(); a corrupt file met while streaming (--on_corrupt=fail) becomes a DataError naming
    it (one line, exit 2), and result.json gets `skipped_files` where images were skipped (--on_corrupt=skip)."""
    import tensorflow as tf

    from framework.data.datasets import DataError
    from framework.data.image_folder import unreadable_file_message

    try:
        result = controller.run()
    except tf.errors.InvalidArgumentError as err:
        sources = list(ds.splits.values()) if hasattr(ds, "splits") else [ds]
        message = unreadable_file_message(
            err, sources, first=_files_being_read(controller, sources[0])
        )
        if message is None:
            raise
        raise DataError(message) from None
    skipped = skipped_files(ds)
    if skipped is not None:
        result["skipped_files"] = skipped
        controller.writer.write_json("result.json", result)
    return result


def _files_being_read(controller, train, batches: int = 8) -> list[str]:
    """The files of the training stream's next `batches` fetches from the step it stopped at (prefetching reads
    a few ahead): where a decode error that names no file was met, unless it was met in an evaluation."""
    from framework import input_pipeline

    if not hasattr(train, "example_files"):
        return []
    config, fetch = controller.config, controller.trainer.steps_per_fetch
    step = int(controller.trainer.step.numpy())
    indices = input_pipeline.train_indices(
        train.num_examples,
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        start_step=step,
        steps=batches * fetch,
    )
    return [f for i in indices for f in train.example_files(int(i))]


def skipped_files(ds) -> int | None:
    """Corrupt image files skipped (--on_corrupt=skip): at loading, or met while streaming; None if n/a."""
    skipped = getattr(ds, "skipped", None)
    if skipped is None:
        return None
    return (
        skipped.count
        if hasattr(skipped, "count") and not isinstance(skipped, tuple)
        else len(skipped)
    )


def permute_pixels(images: np.ndarray, seed: int) -> np.ndarray:
    """The same fixed permutation of pixel positions for every image (channels move together)."""
    n, h, w, c = images.shape
    order = np.random.default_rng(seed).permutation(h * w)
    return images.reshape(n, h * w, c)[:, order].reshape(n, h, w, c)


def make_task(exp: ExperimentConfig, config: TrainConfig, num_classes: int, image_shape):
    """(the task of --task, the --augment policy or None). The task's `num_outputs` is the model's output
    width (num_classes; 1 for binary and regression)."""
    import augment
    from framework import tasks

    policy = None
    if exp.augment != "none":
        policy = augment.get_policy(exp.augment, num_classes=num_classes, image_shape=image_shape)
    image_options = dict(
        augment=policy if exp.augment_on == "device" else None,
        tta=_tta(exp.tta_translate) if exp.tta else None,
        eval_transform=eval_transform_of(policy),
        input_range=tasks.INPUT_RANGES[exp.input_range],
    )
    if exp.task == "binary":
        if num_classes != 2:
            raise ConfigError(
                f"--task=binary needs labels 0/1, but --dataset={exp.dataset} has {num_classes} classes: "
                "keep two with --classes=A,B (e.g. --classes=3,5)"
            )
        return tasks.BinaryTask(label_smoothing=exp.label_smoothing, **image_options), policy
    if exp.task == "regression":
        return tasks.RegressionTask(loss=exp.loss or "mse", **image_options), policy
    return tasks.ClassificationTask(
        num_classes, label_smoothing=exp.label_smoothing, **image_options
    ), policy


def normalize_steps(policy) -> list:
    """The policy's `normalize` ops (functools.partials of augment.ops.normalize, or the op itself)."""
    import functools

    from augment import ops

    found = []
    for label, fn in policy.steps:
        base = fn.func if isinstance(fn, functools.partial) else fn
        if base is ops.sometimes and label.startswith("normalize"):
            raise ConfigError(
                "--augment: normalize takes no prob= (it must apply to every image, at evaluation too)"
            )
        if base is ops.normalize:
            found.append(fn)
    return found


def eval_transform_of(policy):
    """What evaluation images get from --augment: the centre crop of crop_to, and its `normalize` (training
    images are normalised in the policy: evaluation must see the same pixel scale), else None."""
    if policy is None:
        return None
    crop, normalizers = policy.eval_transform, normalize_steps(policy)
    if not normalizers:
        return crop

    def transform(images):
        images = crop(images) if crop is not None else images
        for normalize in normalizers:  # per pixel: commutes with the crop
            images = normalize(images)
        return images

    return transform


def check_for_data(exp: ExperimentConfig, image_shape, policy) -> None:
    """What only the data's image shape decides (ExperimentConfig checked the rest): the model's
    smallest input, rot90 on square images, the TTA shift, and the augmentation's option values (one
    eager run on 2 images)."""
    from augment.policies import check_policy
    from trainers import models

    height, width = int(image_shape[0]), int(image_shape[1])
    problem = (
        None
        if not isinstance(exp.model, str) or exp.model not in models.MODELS
        else models.options_error(exp.model, image_size=min(height, width), **architecture(exp))
    )
    if problem:
        raise ConfigError(
            f"--model={exp.model}{''.join(' ' + a for a in [describe_architecture(exp)] if a)} "
            f"on {height}x{width} images"
            f"{f' (--image_size={exp.image_size})' if exp.image_size else ''}: {problem}"
        )
    if "rot90" in exp.eval_transforms and height != width:
        raise ConfigError(
            f"--eval_transforms=rot90 needs square images, not {height}x{width} "
            "(--image_size=N resizes them to N x N)"
        )
    if exp.tta and exp.tta_translate >= min(height, width):
        raise ConfigError(
            f"--tta_translate={exp.tta_translate}: must be smaller than the {height}x{width} images"
        )
    if policy is not None:
        try:
            check_policy(policy, image_shape)
        except ValueError as err:
            raise ConfigError(f"--augment={exp.augment!r}: {err}") from err


def _tta(translate: int):
    """Test-time augmentation: mean logits of the image and its mirror; with `translate`, airbench's
    level 2: half that, half the mean over the mirrored pair shifted by +-translate pixels."""
    import tensorflow as tf

    def mirror(model, images):
        return 0.5 * (
            tf.cast(model(images, training=False), tf.float32)
            + tf.cast(model(tf.reverse(images, axis=[2]), training=False), tf.float32)
        )

    def tta(model, images):
        logits = mirror(model, images)
        if not translate:
            return logits
        t = translate
        height, width = images.shape[1], images.shape[2]
        padded = tf.pad(images, [[0, 0], [t, t], [t, t], [0, 0]], mode="REFLECT")
        shifted = [padded[:, :height, :width], padded[:, 2 * t :, 2 * t :]]
        return 0.5 * logits + 0.25 * (mirror(model, shifted[0]) + mirror(model, shifted[1]))

    return tta


def model_fn_for(
    exp: ExperimentConfig,
    config: TrainConfig,
    num_classes: int,
    image_shape,
    seed: int,
    train_images=None,
    log: bool = True,
):
    """`model_fn()` for the trainer; `num_classes` is the model's output width (the task's num_outputs).
    A custom --model (trainers/model_source.py) is built and checked; --init_from's weights are copied in."""
    from trainers import airbench_net, model_source, models

    whitening = None
    if exp.model == "airbench" and train_images is not None:
        whitening = train_images[: airbench_net.WHITENING_IMAGES]
        if exp.input_range != "0,1":  # the whitening conv sees the pixels as the model will
            from framework.tasks import INPUT_RANGES

            low, high = INPUT_RANGES[exp.input_range]
            whitening = np.asarray(whitening, np.float32) / (
                255.0 if whitening.dtype == np.uint8 else 1.0
            )
            whitening = whitening * (high - low) + low
    init_values = model_source.initial_values(exp.init_from) if exp.init_from else None

    def model_fn():
        if model_source.is_custom(exp.model):
            model = model_source.build(
                exp.model, input_shape=image_shape, num_outputs=num_classes, seed=seed
            )
            if exp.freeze_backbone:
                model_source.freeze_backbone(model)
        else:
            model = models.build_model(
                exp.model,
                input_shape=image_shape,
                num_classes=num_classes,
                dropout=exp.dropout,
                sync_batchnorm=exp.sync_batchnorm,
                pretrained=exp.pretrained,
                freeze_backbone=exp.freeze_backbone,
                seed=seed,
                whitening_images=whitening,
                **architecture(exp),
            )
        if init_values is not None:
            model_source.warm_start(
                model,
                init_values,
                path=exp.init_from,
                what=f"--model={model_source.describe(exp.model)}",
                log=log,
            )
        return model

    return model_fn


def check_model_source(exp: ExperimentConfig, *, num_outputs: int, input_shape, seed: int) -> None:
    """Builds a custom --model, or the model --init_from starts, once to check it (its output width, the
    weights' shapes): a ConfigError before anything is recorded or trained. Built-in models are not built."""
    from trainers import model_source

    if model_source.is_custom(exp.model) or exp.init_from:
        model_fn_for(exp, None, num_outputs, input_shape, seed, log=False)()


def optimizer_fn_for(exp: ExperimentConfig):
    from trainers import optimizers

    def optimizer_fn(learning_rate):
        return optimizers.build_optimizer(
            exp.optimizer,
            learning_rate,
            momentum=exp.momentum,
            nesterov=exp.nesterov,
            weight_decay=exp.weight_decay,
        )

    return optimizer_fn


def run_experiment(
    exp: ExperimentConfig,
    config: TrainConfig,
    *,
    hooks=(),
    strategy=None,
    data=None,
    on_trained=None,
) -> dict:
    """Train one model and return result.json's contents (also written under config.model_dir).
    `on_trained(controller)` is called once the model is trained (--repeats' ensembles: controller.predict)."""
    from trainers import evaluation, tpu_guard

    tpu_guard.check(exp, config)  # what a TPU cannot run: refused before the TPU is started
    strategy = strategy or framework.prepare_runtime(config)
    check_run_dir(exp, config)  # a --model_dir of another run fails before the data is read ...
    ds = None
    if data is None:
        data, ds = load_data(exp, config.seed)
        num_classes, image_shape, class_names = ds.num_classes, ds.image_shape, ds.class_names
    else:
        num_classes, image_shape, class_names = (
            int(np.max(data.train[1])) + 1,
            data.train[0].shape[1:],
            None,
        )
    task, policy = make_task(exp, config, num_classes, image_shape)
    check_for_data(exp, image_shape, policy)
    check_model_source(
        exp,
        num_outputs=task.num_outputs,
        seed=config.seed,
        input_shape=policy.output_shape(image_shape) if policy is not None else image_shape,
    )
    data = evaluation.with_eval_subsets(
        data, config.eval_splits
    )  # test_a, test_b: the test set's halves
    from framework.controller import eval_split_names

    eval_splits = eval_split_names(
        config, data
    )  # an unknown split: refused here, before anything is built
    # ... and a run that can start records itself (or moves the old one aside), before the time budget
    # and the model: a refused command leaves the directory as it was.
    check_run_dir(exp, config, strategy=strategy, write=True)
    if exp.augment_on == "host" and policy is not None:
        data = dataclasses.replace(data, host_fn=evaluation.host_augment_fn(policy, config.seed))
    run_config = {**config.to_dict(), **exp.to_dict()}
    model_shape = (
        policy.output_shape(image_shape) if policy is not None else image_shape
    )  # crop_to: smaller
    model_fn = model_fn_for(
        exp,
        config,
        task.num_outputs,
        model_shape,
        config.seed,
        train_images=first_images(data.train, exp),
    )
    if exp.train_minutes and not config.train_steps:
        from trainers.time_budget import LADDERS, steps_for_budget

        budget = steps_for_budget(
            exp.train_minutes,
            config=config,
            data=data,
            model_fn=model_fn,
            optimizer_fn=optimizer_fn_for(exp),
            task=task,
            strategy=strategy,
            ladder=LADDERS[exp.model] if exp.budget_ladder else None,
            widths=exp.widths,
            rung_model_fn=lambda widths: model_fn_for(
                dataclasses.replace(exp, widths=tuple(widths)),
                config,
                task.num_outputs,
                model_shape,
                config.seed,
                train_images=first_images(data.train, exp),
                log=False,
            ),
        )
        config = config.replace(train_steps=budget["train_steps"])
        if budget.get("widths") and tuple(budget["widths"]) != tuple(
            exp.widths
        ):  # the ladder's rung
            exp = dataclasses.replace(exp, widths=tuple(budget["widths"]))
            model_fn = model_fn_for(
                exp,
                config,
                task.num_outputs,
                model_shape,
                config.seed,
                train_images=first_images(data.train, exp),
            )
        run_config = {
            **run_config,
            "train_steps": config.train_steps,
            "widths": exp.widths,
            "time_budget": budget,
        }
    trainer = framework.build_trainer(
        config,
        data,
        model_fn=model_fn,
        optimizer_fn=optimizer_fn_for(exp),
        task=task,
        strategy=strategy,
    )
    live_curves = []  # --plot: curves.png rewritten after each history row
    if exp.plot and config.model_dir:
        from trainers import plots

        live_curves.append(
            lambda row: plots.write_curves(config.model_dir, task.metric_names, eval_splits)
        )
    controller = framework.Controller(
        trainer, data, config, hooks=hooks, eval_hooks=live_curves, run_config=run_config
    )
    result = run_reading_files(controller, ds)
    if exp.eval_transforms:
        result.update(evaluation.transformed_accuracies(controller, data, exp.eval_transforms))
    if exp.predictions:
        result.update(
            evaluation.write_predictions(
                controller, task, exp.eval_transforms, class_names=class_names, plot=exp.plot
            )
        )
    if exp.eval_transforms or exp.predictions:
        controller.writer.write_json("result.json", result)
    if on_trained is not None:
        on_trained(controller)
    if exp.plot and config.model_dir:  # plots: imported above, for the live curves
        samples = first_images(data.evals["test"], 8)
        if task.eval_transform is not None:  # crop_to: the model takes the centre crop
            samples = np.asarray(task.eval_transform(samples))
        plots.write_plots(
            config.model_dir, trainer.model, samples, metrics=task.metric_names, splits=eval_splits
        )
    return result


def recorded_config(exp: ExperimentConfig, config: TrainConfig) -> dict:
    """The configuration recorded in (and compared with) the run directory: the user's, before any
    time budget picks train_steps (the budget's decision is kept in its own file)."""
    return {**config.to_dict(), **exp.to_dict()}


def check_run_dir(
    exp: ExperimentConfig, config: TrainConfig, *, strategy=None, write=False
) -> None:
    """Refuses a --model_dir that holds a run with another configuration (see framework.run_record);
    with `write`, also starts afresh there (--fresh_start) and records this configuration."""
    from framework import run_record as record

    # A named dataset is the same wherever its file lives; image_folder/tfrecords data is the folder.
    ignore = () if exp.dataset in FILE_DATASETS else ("data_dir",)
    ignore += ("predictions", "eval_at_start")  # outputs: they change no training
    ignore += (
        "data_service",
    )  # where the input is made: a resume may use another dispatcher (launch's port)
    if write:
        record.prepare(
            config.model_dir,
            recorded_config(exp, config),
            fresh_start=config.fresh_start,
            strategy=strategy,
            ignore=ignore,
        )
    elif config.model_dir and not config.fresh_start:
        record.check(config.model_dir, recorded_config(exp, config), ignore=ignore)


def default_model_dir(name: str) -> str:
    return os.path.join("runs", name)
