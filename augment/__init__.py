"""On-device batch augmentation for the compiled train step.

    policy = augment.get_policy("standard", num_classes=10, image_shape=(32, 32, 3))
    seed = augment.step_seed(config.seed, step, replica_id)   # framework.seeds; tensors are fine
    images, labels = policy(images, labels, seed)              # labels float32 [B, K] if
    policy.soft_labels

Ops live in `augment.ops`, one module per family, each registered in `augment.OPS` where it is
defined (a new file in augment/ops/ adds one); `augment.compose` builds your own policy
from callables, registry names or a spec string like "flip,crop:padding=4,cutout:size=8".
`augment.layers.Augment(policy)` is the same as a Keras layer inside your model (active with
training=True). The preview CLI is `python -m augment.preview` (not imported here).
"""

import importlib

# Imported on first use (PEP 562), so `python -m augment.preview` can hide TensorFlow's start-up
# lines.
_EXPORTS = {
    "OPS": "augment.ops",
    "split_seed": "augment.ops",
    "step_seed": "framework.seeds",
    "POLICIES": "augment.policies",
    "Policy": "augment.policies",
    "compose": "augment.policies",
    "get_policy": "augment.policies",
    "parse_spec": "augment.policies",
}
_MODULES = ("ops", "layers")
__all__ = [*_MODULES, *_EXPORTS]


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"augment.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'augment' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
