"""Named augmentation policies for trainers, and composition of your own.

Contract (what the engine calls inside its compiled step): `policy(images, labels, seed)` with
images float32 NHWC in [0, 1] and a static batch size, labels int32 [B] or float32 [B, K], seed
int32/int64 [2] (from framework.seeds.step_seed). Returns images float32 NHWC in [0, 1] and labels:
float32 [B, K] when `policy.soft_labels` (the policy mixes samples: int labels are one-hot encoded),
otherwise the labels unchanged. Each op gets its own seed, split from `seed`.

The image size is kept unless the policy crops to a smaller size (crop_to): then
`policy.output_shape(image_shape)` is the model's input shape, and `policy.eval_transform` (the
centre crop) is what evaluation images get. Any op takes `prob=` in a spec
("affine:max_degrees=10,prob=0.7"): each sample gets it with that probability (ops with a `prob` of
their own use theirs).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from typing import Callable, Sequence

import tensorflow as tf
from absl import logging

from augment import ops

Step = tuple[str, Callable]  # (name for display, op)
OpLike = Callable | str | tuple[str, dict]


@dataclasses.dataclass(frozen=True)
class Policy:
    """A callable `policy(images, labels, seed) -> (images, labels)`; build with
    `compose`/`get_policy`."""

    name: str
    steps: tuple[Step, ...]
    num_classes: int | None = None

    @property
    def compiles(self) -> bool:
        """Whether every step is an op registered with xla=True (each tested the same eagerly, in
        graph and under XLA), so the policy can run as one XLA cluster; any other callable may not
        compile."""
        return all(ops.compiles(fn) for _, fn in self.steps)

    def compiled(self) -> Callable:
        """The policy as one XLA cluster where it `compiles`, else itself (and one info line naming
        the steps that keep it out of XLA): XLA fuses its ops into one pass over the batch, where TF
        runs each op as its own pass over the whole float batch, for the same pixels. The engine's
        step and the host pipeline (tf.data) both run it so."""
        if self.compiles:
            return tf.function(self, jit_compile=True)
        uncompiled = [name for name, fn in self.steps if not ops.compiles(fn)]
        logging.info(
            "augmentation %r runs without XLA: %s not registered with xla=True",
            self.name,
            ", ".join(uncompiled),
        )
        return self

    @property
    def soft_labels(self) -> bool:
        """Whether the policy returns soft float32 [B, K] labels (it contains a label-mixing op)."""
        return any(ops.mixes_labels(fn) for _, fn in self.steps)

    def __call__(self, images, labels, seed):
        images = tf.convert_to_tensor(images)
        labels = tf.convert_to_tensor(labels)
        if self.soft_labels:
            labels = ops.soft_labels(labels, self.num_classes)
        if not self.steps:
            return images, labels
        seeds = ops.split_seed(seed, len(self.steps))
        for i, (_, fn) in enumerate(self.steps):
            if ops.mixes_labels(fn):
                images, labels = fn(images, labels, seeds[i], num_classes=self.num_classes)
            else:
                images = fn(images, seeds[i])
        return images, labels

    def output_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """(H, W, C) of the images the policy returns for images of `image_shape`: the model's input
        shape (smaller than `image_shape` after crop_to). Traced, not run."""
        image_shape = tuple(int(d) for d in image_shape)
        if not self.steps:
            return image_shape
        labels = tf.TensorSpec([2], tf.int32)
        fn = tf.function(lambda x, y: self(x, y, tf.constant([0, 0]))[0])
        out = fn.get_concrete_function(tf.TensorSpec([2, *image_shape], tf.float32), labels)
        return tuple(int(d) for d in out.structured_outputs.shape[1:])

    @property
    def eval_transform(self) -> Callable | None:
        """`images -> images` for evaluation when the policy changes the image size (crop_to: the
        centre crop of the same size, so evaluation images fit the model), else None (evaluation
        images are left alone)."""
        counterparts = [ops.eval_counterpart(fn) for _, fn in self.steps]
        counterparts = [fn for fn in counterparts if fn is not None]
        if not counterparts:
            return None

        def transform(images):
            for fn in counterparts:
                images = fn(images)
            return images

        return transform

    def __str__(self):
        return f"{self.name}: {' -> '.join(name for name, _ in self.steps) or 'identity'}"


def parse_spec(spec: str) -> list[tuple[str, dict]]:
    """ "flip,crop:padding=4,fill_mode=constant,cutout:size=8" -> [(name, kwargs), ...].

    Ops are separated by commas; `name:key=value` starts an op and further `key=value` items belong
    to it. Values are Python literals (ints, floats, tuples, True) or else plain strings. Commas
    inside brackets don't split: "normalize:mean=(0.49,0.48,0.45),std=(0.25,0.24,0.26)".
    """
    items, depth, current = [], 0, ""
    for ch in spec:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    steps: list[tuple[str, dict]] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, sep, rest = item.partition(":")
        if "=" in name:  # a key=value continuing the previous op
            if not steps:
                raise ValueError(f"augmentation spec {spec!r}: {item!r} comes before any op name")
            key, value = item.split("=", 1)
            steps[-1][1][key.strip()] = _literal(value)
            continue
        steps.append((name.strip(), {}))
        if sep:
            key, eq, value = rest.partition("=")
            if not eq:
                raise ValueError(
                    f"augmentation spec {spec!r}: expected key=value after '{name}:', got {rest!r}"
                )
            steps[-1][1][key.strip()] = _literal(value)
    return steps


def _literal(text: str):
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def compose(
    op_list: Sequence[OpLike] | str, *, num_classes: int | None = None, name: str = "custom"
) -> Policy:
    """Builds a Policy from ops applied in order: callables (image ops `fn(images, seed)` or label
    ops marked `mixes_labels`, e.g. functools.partial(ops.random_crop, padding=4)), registry names,
    (name, kwargs) pairs, or a spec string for `parse_spec`. Label ops need `num_classes`."""
    if isinstance(op_list, str):
        op_list = parse_spec(op_list)
    steps = []
    for op in op_list:
        if isinstance(op, str):
            op = (op, {})
        if isinstance(op, tuple):
            op_name, kwargs = op
            if op_name not in ops.OPS:
                raise ValueError(
                    f"unknown augmentation op {op_name!r}; valid ops: {ops.OPS.names()}"
                )
            label = op_name + "".join(f" {k}={v}" for k, v in kwargs.items())
            steps.append((label, _op_from_registry(op_name, dict(kwargs))))
        elif callable(op):
            base = op.func if isinstance(op, functools.partial) else op
            label = getattr(base, "__name__", repr(base))
            if isinstance(op, functools.partial):
                label += "(" + ", ".join(f"{k}={v!r}" for k, v in op.keywords.items()) + ")"
            steps.append((label, op))
        else:
            raise TypeError(
                f"augmentation op {op!r} is neither a callable, a name nor (name, kwargs)"
            )
    policy = Policy(name=name, steps=tuple(steps), num_classes=num_classes)
    if policy.soft_labels and (num_classes is None or num_classes < 1):
        raise ValueError(f"`num_classes` ({num_classes}) must be a positive integer for mixing ops")
    return policy


def _op_from_registry(op_name: str, kwargs: dict) -> Callable:
    """The registered op with `kwargs`; a `prob` the op does not take itself wraps it in
    ops.sometimes."""
    op = ops.OPS.get(op_name).fn
    takes = ops.options(op)
    prob = kwargs.pop("prob") if "prob" in kwargs and "prob" not in takes else None
    unknown = [k for k in kwargs if k not in takes]
    if unknown:
        raise ValueError(
            f"op {op_name!r} has no option {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join((*takes, 'prob') if 'prob' not in takes else takes)}"
        )
    fn = functools.partial(op, **kwargs) if kwargs else op
    if prob is None:
        return fn
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"{op_name}: `prob` ({prob!r}) must be a number in [0, 1]")
    if ops.mixes_labels(op):
        raise ValueError(f"{op_name}: a label-mixing op takes no `prob`")
    return functools.partial(ops.sometimes, op=fn, prob=float(prob))


def check_policy(policy: Policy, image_shape: Sequence[int]) -> tuple[int, ...]:
    """Runs `policy` once, eagerly on the CPU, on two blank images of `image_shape`: a bad option
    value (a negative padding, a cutout larger than the image, a crop larger than the image, a word
    where a number goes) raises ValueError here, before anything is built or trained, instead of
    inside the compiled step. Returns the output image shape (H, W, C), as `policy.output_shape`."""
    height, width, channels = (int(d) for d in image_shape)
    with tf.device("/CPU:0"):
        images, labels = tf.zeros([2, height, width, channels]), tf.zeros([2], tf.int32)
        if policy.soft_labels:
            labels = ops.soft_labels(labels, policy.num_classes)
        # One op at a time, to name the one that fails.
        for i, (name, fn) in enumerate(policy.steps):
            try:
                if ops.mixes_labels(fn):
                    images, labels = fn(
                        images, labels, tf.constant([1, i]), num_classes=policy.num_classes
                    )
                else:
                    images = fn(images, tf.constant([1, i]))
            except ValueError as err:  # our own checks: the message names the option
                raise ValueError(f"{name}: {' '.join(str(err).split())}") from err
            except (TypeError, tf.errors.OpError) as err:  # a value of the wrong kind, deeper down
                message = " ".join((getattr(err, "message", None) or str(err)).split())
                raise ValueError(
                    f"{name}: an option value of the wrong type or shape ({message})"
                ) from err
        return tuple(int(d) for d in images.shape[1:])


# ----------------------------------------------------------------------------------- named policies


def _flip_crop(height: int, width: int, channels: int, flip: bool):
    padding = max(1, round(min(height, width) / 8))  # 4 px for 32x32 and 28x28
    steps = [ops.random_flip_lr] if flip else []
    return steps + [functools.partial(ops.random_crop, padding=padding, fill_mode="reflect")]


def _standard(height, width, channels, flip):
    # 8 px for 32x32 (the Cutout paper's CIFAR-100 size), 7 for 28.
    size = max(1, min(height, width) // 4)
    return _flip_crop(height, width, channels, flip) + [
        functools.partial(ops.random_cutout, size=size)
    ]


def _strong(height, width, channels, flip):
    steps = _flip_crop(height, width, channels, flip)
    steps.append(functools.partial(ops.random_affine, max_degrees=10.0, max_fraction=1 / 16))
    steps.append(functools.partial(ops.random_brightness, max_delta=0.2))
    steps.append(functools.partial(ops.random_contrast, max_delta=0.2))
    if channels == 3:  # saturation and hue mean nothing for grayscale
        steps.append(functools.partial(ops.random_saturation, max_delta=0.2))
        steps.append(functools.partial(ops.random_hue, max_delta=0.05))
    steps.append(functools.partial(ops.random_cutout, size=max(1, min(height, width) // 4)))
    steps.append(functools.partial(ops.mixup_or_cutmix, mixup_alpha=0.8, cutmix_alpha=1.0))
    return steps


POLICIES: dict[str, Callable] = {
    "none": lambda height, width, channels, flip: [],
    "flip_crop": _flip_crop,
    "standard": _standard,
    "strong": _strong,
}


def get_policy(
    name: str, *, num_classes: int, image_shape: Sequence[int], flip: bool | None = None
) -> Policy:
    """A named policy ('none', 'flip_crop', 'standard', 'strong') for images of `image_shape` (H, W,
    C), or a spec string for `parse_spec` such as "flip,crop:padding=4".

    Scales with the image: crop padding round(size / 8) (4 px at 32x32), cutout size // 4 (8 px).
    `flip=None` flips only colour images: left-right flips change the meaning of digits and letters,
    the usual 1-channel datasets (MNIST, EMNIST). Pass flip=True for e.g. Fashion-MNIST.
    """
    if len(image_shape) != 3:
        raise ValueError(f"`image_shape` ({image_shape}) must be (height, width, channels)")
    height, width, channels = (int(d) for d in image_shape)
    if flip is None:
        flip = channels == 3
    if name in POLICIES:
        steps = POLICIES[name](height, width, channels, flip)
        return compose(steps, num_classes=num_classes, name=name)
    is_spec = "," in name or ":" in name or name in ops.OPS
    if not is_spec:
        raise ValueError(
            f"unknown augmentation policy {name!r}; valid policies: {sorted(POLICIES)}, "
            f"or a spec of ops like 'flip,crop:padding=4' from {ops.OPS.names()}"
        )
    return compose(name, num_classes=num_classes, name=name)
