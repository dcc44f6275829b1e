"""An experiment's model side: the task of --task (with the augmentation policy, TTA and evaluation
transform it applies), the checks that need the data's image shape, and the model and optimizer
builders the engine calls."""

import numpy as np
import tensorflow as tf

import augment
from augment.policies import check_policy
from framework import ConfigError, TrainConfig, tasks
from trainers import model_source, models, optimizers
from trainers.experiment_config import (
    ExperimentConfig,
    architecture,
    describe_architecture,
    normalize_steps,
)
from trainers.experiment_data import whitening_images


def make_task(exp: ExperimentConfig, config: TrainConfig, num_classes: int, image_shape):
    """(the task of --task, the --augment policy or None). The task's `num_outputs` is the model's
    output width (num_classes; 1 for binary and regression)."""
    policy = None
    if exp.augment != "none":
        policy = augment.get_policy(exp.augment, num_classes=num_classes, image_shape=image_shape)
    image_options = dict(
        augment=policy if exp.augment_on == "device" else None,
        tta=_tta(exp.tta_translate) if exp.tta else None,
        eval_transform=eval_transform_of(policy),
        input_range=tasks.INPUT_RANGES[exp.input_range],
    )
    entry = tasks.TASKS.get(exp.task)
    if entry.get("classes") and num_classes != entry.classes:
        raise ConfigError(
            f"--task={exp.task} needs labels 0/1, but --dataset={exp.dataset} has {num_classes} "
            "classes: keep two with --classes=A,B (e.g. --classes=3,5)"
        )
    task = entry.fn(
        num_classes, label_smoothing=exp.label_smoothing, loss=exp.loss, **image_options
    )
    return task, policy


def eval_transform_of(policy):
    """What evaluation images get from --augment: the centre crop of crop_to, and its `normalize`
    (training images are normalised in the policy: evaluation must see the same pixel scale), else
    None."""
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
    """`model_fn()` for the trainer; `num_classes` is the model's output width (the task's
    num_outputs). A custom --model (trainers/model_source.py) is built and checked; --init_from's
    weights are copied in."""
    whitening = None
    count = whitening_images(exp.model)
    if count and train_images is not None:
        whitening = train_images[:count]
        if exp.input_range != "0,1":  # the whitening conv sees the pixels as the model will
            low, high = tasks.INPUT_RANGES[exp.input_range]
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
    """Builds a custom --model, or the model --init_from starts, once to check it (its output width,
    the weights' shapes): a ConfigError before anything is recorded or trained. Built-in models are
    not built."""
    if model_source.is_custom(exp.model) or exp.init_from:
        model_fn_for(exp, None, num_outputs, input_shape, seed, log=False)()


def optimizer_fn_for(exp: ExperimentConfig):
    def optimizer_fn(learning_rate):
        return optimizers.build_optimizer(
            exp.optimizer,
            learning_rate,
            momentum=exp.momentum,
            nesterov=exp.nesterov,
            weight_decay=exp.weight_decay,
        )

    return optimizer_fn
