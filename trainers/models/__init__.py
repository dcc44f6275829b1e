"""Image classifiers by name: `build_model("resnet9", input_shape=(32, 32, 3), num_classes=10)`.

Each model is one entry of `MODELS`, registered in its own file of this package, with the options it
takes and its checks beside its builder (mlp.py, cnn.py, resnet9.py, airbench.py, efficientnet.py):

    @MODELS.register("tiny", takes=("activation",), check=check_tiny)
    def tiny(layers, input_shape, num_classes, *, name, dropout, freeze_backbone, seed, **options):
        ...  # -> keras.Model of float32 logits

A new file here is a new `--model` name; nothing else lists it. An entry declares:
  takes       the options of OPTIONS it accepts (any other one given is refused, naming the models
              that take it); `refuses` may explain one ({"widths": "... cannot be set"}).
  check       `check(name, image_size=None, **options) -> (option, problem) | None`: what it refuses
              before anything is built (build_model raises it; a configuration is refused with it
              before any data is read: options_error).
  widths      its default widths, where it takes them (the budget ladder, help text).
  flat_input  True where it also takes (features,) inputs (mlp).
  whitening   True where it sets weights from the first training images (airbench).
  torch_init  True where its kernels start from PyTorch's default init (airbench).
  normalizes_input  True where it normalises [0, 1] images itself (the efficientnets).

Conventions: every model maps float32 NHWC images in [0, 1] (or already normalised) to float32
LOGITS (no softmax), whatever the global dtype policy; an option left None is the model's own;
`seed` gives every layer its own seeded initializer (from the seed and the layer's name), so two
builds with one seed have identical weights without touching global random state; models contain no
Lambda layers, so `.keras` files load with `safe_mode=True`.
"""

import numpy as np

from framework.registry import Registry
from trainers.models.common import Layers, Scale

MODELS = Registry("model", package="trainers.models")

# The architecture options a model may take (`takes`), and how a model that does not take one says
# so ({takers}: the models that do); dropout, seed and the rest apply to every model.
OPTIONS = {
    "widths": "--widths only applies to {takers}",
    "activation": "--activation only applies to {takers}",
    "batchnorm": "--batchnorm only applies to {takers}",
    "dense_widths": "--dense_widths only applies to {takers}",
    "padding": "--padding only applies to {takers}",
    "pool": "--pool only applies to {takers}",
    "pretrained": "only {takers} have pretrained weights, not {name}",
    "whitening_images": "whitening_images only applies to {takers}",
}

__all__ = ["MODELS", "OPTIONS", "Scale", "build_model", "options_error", "takers"]


def takers(option: str) -> list[str]:
    """The models that take `option`."""
    return [e.name for e in MODELS.entries() if option in e.get("takes", ())]


def _refusal(entry, option: str) -> str | None:
    """Why `entry` refuses `option` (None: it takes it)."""
    if option in entry.get("takes", ()):
        return None
    reason = entry.get("refuses", {}).get(option)
    if reason:
        return f"{entry.name} {reason}"
    return OPTIONS[option].format(takers=", ".join(takers(option)), name=entry.name)


def options_error(name, *, image_size=None, **options) -> str | None:
    """Why model `name` cannot take these options, in words for a user (None if it can): the model's
    own checks, so a configuration is refused before anything is built. `image_size` is the input's
    smaller side. Options left None/empty are the model's own."""
    if name not in MODELS:
        return f"unknown model {name!r}; valid models: {', '.join(MODELS)}"
    entry = MODELS.get(name)
    given = {k: v for k, v in options.items() if v not in (None, "", (), False)}
    for option in given:
        refused = _refusal(entry, option)
        if refused:
            return refused
    problem = _check(entry, image_size, given)
    return problem[1] if problem else None


def build_model(
    name,
    *,
    input_shape,
    num_classes,
    dropout=0.0,
    sync_batchnorm=False,
    freeze_backbone=False,
    seed=None,
    name_prefix=None,
    **options,
):
    """Builds model `name` (one of MODELS), returning float32 logits of shape (batch, num_classes).

    Args:
      name: one of MODELS.
      input_shape: shape of one example, e.g. (28, 28, 1) or (32, 32, 3); mlp also takes
      (features,). num_classes: number of logits.
      dropout: rate of the model's Dropout layers; 0 means none (cnn_dropout: its own rate).
      sync_batchnorm: make every BatchNormalization `synchronized=True` (statistics across
      replicas). freeze_backbone: only the final logits layer is trainable (linear probing).
      seed: int for deterministic initialization and dropout, None for random.
      name_prefix: prefix for the model's and its layers' names (to tell two models apart).
      **options: the architecture options of OPTIONS the model takes (see its file): widths,
        activation ("relu", or for mlp/cnn* one per layer "relu,sigmoid"), batchnorm, dense_widths,
        padding, pool, pretrained, whitening_images. None: the model's own.
    """
    if name not in MODELS:
        raise ValueError(f"`name` ({name!r}) must be one of {', '.join(MODELS)}")
    entry = MODELS.get(name)
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"build_model() got unexpected options {', '.join(sorted(unknown))}")
    input_shape = _check_input_shape(name, input_shape, flat=entry.get("flat_input", False))
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"`num_classes` ({num_classes!r}) must be a positive integer")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"`seed` ({seed!r}) must be None or a non-negative integer")
    dropout = dropout or 0.0
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` ({dropout!r}) must be in [0, 1)")
    # None is the model's own value; so is pretrained=False (no model must have weights).
    given = {
        k: v for k, v in options.items() if v is not None and not (k == "pretrained" and v is False)
    }
    for option, value in given.items():
        refused = _refusal(entry, option)
        if refused:
            raise ValueError(f"`{option}` ({value!r}) does not apply to {name}: {refused}")
    image_size = min(input_shape[:2]) if len(input_shape) == 3 else None
    problem = _check(entry, image_size, given)
    if problem:
        option, text = problem
        value = given.get(option, input_shape if option == "input_shape" else None)
        raise ValueError(f"`{option}` ({value!r}): {text}")
    layers = Layers(seed, name_prefix, sync_batchnorm, torch_init=entry.get("torch_init", False))
    return entry.fn(
        layers,
        input_shape,
        num_classes,
        name=name,
        dropout=dropout,
        freeze_backbone=freeze_backbone,
        seed=seed,
        **given,
    )


def _check(entry, image_size, given):
    check = entry.get("check")
    return check(entry.name, image_size=image_size, **given) if check else None


def _is_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _check_input_shape(name, input_shape, *, flat):
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or not shape or any(d < 1 for d in shape) or (not flat and len(shape) != 3):
        need = "positive integers" if flat else "(height, width, channels)"
        raise ValueError(f"`input_shape` ({input_shape!r}) must be {need} for {name}")
    return shape
