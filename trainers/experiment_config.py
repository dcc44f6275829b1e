"""ExperimentConfig: what an image trainer adds on top of the engine's TrainConfig (data, model,
optimizer, augmentation, evaluation), a frozen dataclass checked when it is built, before any data
is read or model built. The names it takes (--dataset, --model, --task) are those of their
registries: framework/data/sources/, trainers/models/, framework/tasks.py.
"""

import dataclasses
import functools

import augment
from framework import ConfigError
from framework.config import option
from framework.data.sources import SOURCES
from framework.registry import Entry
from trainers import model_source

AUGMENT_WHERE = ("device", "host")
# The options that pick or shape a built-in model (trainers/models/ OPTIONS); a custom --model sets
# its own.
MODEL_OPTIONS = ("widths", "dense_widths", "padding", "pool", "activation", "pretrained")
EVAL_TRANSFORMS = ("flip_ud", "flip_lr", "rot90", "invert")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    # Data.
    dataset: str = option(
        "mnist",
        "A data source (framework/data/sources/): mnist, fashion_mnist, cifar10, cifar100, "
        "synthetic, or image_folder / tfrecords with --data_dir.",
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
        "efficientnetv2_b0 (trainers/models/); or your own: path/to/file.py:function or "
        "package.module:function, called as fn(input_shape=(H, W, C), num_classes=N) and "
        "returning a Keras model of float logits (batch, N); or path/to/saved.keras to "
        "fine-tune (trainers/model_source.py).",
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
        "classification (softmax over the classes), binary (one sigmoid logit, labels 0/1, e.g. "
        "--classes=3,5) or regression (the label as a number, one output; metric mae).",
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
        from trainers import optimizers  # lazy: keeps TF out of --help
        from trainers.time_budget import LADDERS  # lazy: keeps TF out of --help

        source = SOURCES.get(self.dataset)
        _choice("on_corrupt", self.on_corrupt, ("fail", "skip"))
        _choice("data_in_memory", self.data_in_memory, ("auto", "yes", "no"))
        if self.max_image_pixels < 0:
            raise ConfigError(
                f"--max_image_pixels={self.max_image_pixels}: give a pixel count, or 0 for no limit"
            )
        if self.data_in_memory == "no" and not source.get("streams"):
            streamers = " or ".join(e.name for e in SOURCES.entries() if e.get("streams"))
            raise ConfigError(
                f"--data_in_memory=no streams files: it needs --dataset={streamers}, "
                f"not --dataset={self.dataset} (a named dataset is held in memory)"
            )
        if source.get("reads_dir") and not self.data_dir:
            raise ConfigError(
                f"--dataset={self.dataset} needs --data_dir=PATH (the folder to read)"
            )
        # A built-in name, or a file / module function / .keras that exists.
        model_source.check(self.model)
        _choice("optimizer", self.optimizer, optimizers.OPTIMIZERS)
        _choice("augment_on", self.augment_on, AUGMENT_WHERE)
        for name in self.eval_transforms:
            _choice("eval_transforms", name, EVAL_TRANSFORMS)
        if self.augment != "none":
            from framework.tasks import TASKS  # lazy: keeps TF out of --help

            try:
                policy = augment.get_policy(self.augment, num_classes=10, image_shape=(32, 32, 3))
            except ValueError as err:
                raise ConfigError(f"--augment={self.augment!r}: {err}") from err
            if policy.soft_labels and not TASKS.get(self.task).get("soft_labels"):
                raise ConfigError(
                    f"--augment={self.augment!r} mixes labels (mixup/cutmix): not for "
                    f"--task={self.task}"
                )
            if normalize_steps(policy) and self.input_range != "0,1":
                raise ConfigError(
                    f"--augment={self.augment!r} normalizes and "
                    f"--input_range={self.input_range} rescales the pixels: give one of "
                    "them"
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
            for name in (*MODEL_OPTIONS, "dropout"):
                if getattr(self, name):
                    raise ConfigError(
                        f"--{name} applies to the built-in models, not to "
                        f"--model={model_source.describe(self.model)} (your model sets its own)"
                    )
        else:
            check_model_options(self)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"--momentum={self.momentum}: must be in [0, 1)")
        # trainers/recipes.py drops a recipe's values that do not apply to the optimizer.
        for name, takers in optimizers.TAKES_MOMENTUM.items():
            if getattr(self, name) and self.optimizer not in takers:
                raise ConfigError(
                    f"--{name}={getattr(self, name)} does not apply to "
                    f"--optimizer={self.optimizer} (only to {' and '.join(takers)})"
                )
        if self.weight_decay < 0:
            raise ConfigError(f"--weight_decay={self.weight_decay}: must be >= 0")
        if self.permute_pixels < -1:
            raise ConfigError(
                f"--permute_pixels={self.permute_pixels}: a seed >= 0, or -1 for none"
            )

    def to_dict(self) -> dict:
        # A callable --model is recorded by its name.
        return {**dataclasses.asdict(self), "model": model_source.describe(self.model)}


def check_model_options(exp: ExperimentConfig) -> None:
    """What the built-in model refuses (trainers/models/: the model's own check), before anything
    is built: each option alone first, so that the error names it; the image size again once the
    data is loaded (check_for_data)."""
    from trainers import models  # lazy: keeps TF out of --help

    for name, value in (
        *((n, getattr(exp, n)) for n in MODEL_OPTIONS),
        ("image_size", exp.image_size),
    ):
        problem = models.options_error(exp.model, **{name: value})
        if problem:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            shown = "" if isinstance(value, bool) else f"={shown}"
            raise ConfigError(f"--{name}{shown} with --model={exp.model}: {problem}")
    problem = models.options_error(exp.model, **architecture(exp), image_size=exp.image_size)
    if problem:
        raise ConfigError(f"--model={exp.model} {describe_architecture(exp)}: {problem}")


def _check_task(exp: ExperimentConfig) -> None:
    """--task, --loss and --input_range, and what does not go with them (framework/tasks.py's
    entries declare it)."""
    from framework.tasks import INPUT_RANGES, TASKS  # lazy: keeps TF out of --help

    task = TASKS.get(exp.task)
    _choice("input_range", exp.input_range, tuple(INPUT_RANGES))
    losses = task.get("losses", ())
    if exp.loss and not losses:
        takers = [e for e in TASKS.entries() if e.get("losses")]
        raise ConfigError(
            f"--loss={exp.loss} is for "
            + " or ".join(f"--task={e.name} ({', '.join(e.losses)})" for e in takers)
            + f"; --task={exp.task} has its own"
        )
    if exp.loss:
        _choice("loss", exp.loss, losses)
    classes = task.get("classes")
    if classes and exp.classes and len(exp.classes) != classes:
        raise ConfigError(
            f"--task={exp.task} needs {'two' if classes == 2 else classes} classes, not "
            f"--classes={','.join(map(str, exp.classes))}"
        )
    if not task.get("per_class"):
        for name in ("label_smoothing", "eval_transforms"):
            if getattr(exp, name):
                raise ConfigError(f"--{name} is for classification, not --task={exp.task}")
    if exp.input_range != "0,1" and _model_entry(exp.model).get("normalizes_input"):
        raise ConfigError(
            f"--input_range={exp.input_range}: {exp.model} normalises [0, 1] images itself; "
            "leave --input_range=0,1"
        )


def architecture(exp: ExperimentConfig) -> dict:
    """The built-in model's options as models.build_model / options_error take them (None: its
    own)."""
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


def _model_entry(model):
    """The registered entry of a built-in --model; an empty one for a custom model."""
    from trainers import models  # lazy: keeps TF out of --help

    if isinstance(model, str) and model in models.MODELS:
        return models.MODELS.get(model)
    return Entry(str(model), None, {})


def normalize_steps(policy) -> list:
    """The policy's `normalize` ops (functools.partials of augment.ops.normalize, or the op
    itself)."""
    from augment import ops  # lazy: keeps TF out of --help

    found = []
    for label, fn in policy.steps:
        base = fn.func if isinstance(fn, functools.partial) else fn
        if base is ops.sometimes and label.startswith("normalize"):
            raise ConfigError(
                "--augment: normalize takes no prob= (it must apply to every image, at "
                "evaluation too)"
            )
        if base is ops.normalize:
            found.append(fn)
    return found
