"""On-device batch augmentation for the compiled train step.

    policy = augment.get_policy("standard", num_classes=10, image_shape=(32, 32, 3))
    seed = augment.step_seed(config.seed, step, replica_id)   # inside the step; tensors are fine
    images, labels = policy(images, labels, seed)              # labels float32 [B, K] if policy.soft_labels

Ops live in `augment.ops` (registry: `augment.ops.REGISTRY`); `augment.compose` builds your own policy
from callables, registry names or a spec string like "flip,crop:padding=4,cutout:size=8".
The preview CLI is `python -m augment.preview` (not imported here).
"""
from augment import ops
from augment.ops import REGISTRY, split_seed, step_seed
from augment.policies import POLICIES, Policy, compose, get_policy, parse_spec

__all__ = ["ops", "REGISTRY", "POLICIES", "Policy", "compose", "get_policy", "parse_spec", "split_seed",
           "step_seed"]
