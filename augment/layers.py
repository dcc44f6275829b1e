"""Our augmentation ops as a Keras layer: augmentation inside the model, as the notebooks put
RandomFlip, RandomCrop or a cutout Lambda in theirs.

    model = keras.Sequential([keras.Input((28, 28, 1)),
                              augment.layers.Augment("crop_to:size=24,affine:max_degrees=10,prob=0.7"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])

`Augment(policy)` takes a named policy ("flip_crop", "standard") or a spec string, the same as
--augment, without the label-mixing ops (a layer sees no labels). With training=True it augments
each sample on its own; otherwise it is the identity, or the centre crop after crop_to (so the model
takes the same input either way and outputs the cropped size). It compiles under XLA
(jit_compile=True, TPU).

Seeds: inside our Trainer's step the layer takes the step's seed of (run seed, step, replica) as its
`step_seed` call argument (framework.seeds: the step passes it, as Keras passes `training`), so it
gives exactly the images `--augment` would for the same seed; `seed=k` folds k into it, so two
layers in one model draw differently. Elsewhere (Keras `fit`, your own loop) it draws from its own
`keras.random.SeedGenerator(seed)`. It must be one of the model's own layers (not inside a nested
model) to receive the step's seed.
The model saves and loads as .keras (safe mode: no Lambda).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from augment import policies
from framework import seeds


@keras.saving.register_keras_serializable(package="augment")
class Augment(keras.layers.Layer):
    """A policy name or spec string (as --augment) as a layer: augments with training=True, per
    sample.

    `seed` seeds the layer's own SeedGenerator (used outside our Trainer; inside it, folded into the
    step's seed when given); `flip` as `get_policy`
    (None: named policies flip colour images only). Images float32 in [0, 1] (or uint8), NHWC.
    """

    def __init__(self, policy: str, *, seed: int | None = None, flip: bool | None = None, **kwargs):
        # Our ops compute in float32, also under mixed precision.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not isinstance(policy, str):
            raise TypeError(
                f"Augment takes a policy name or spec string, got {type(policy).__name__}"
            )
        self.policy, self.seed, self.flip = policy, seed, flip
        # A bad name or option fails here, not at the first step.
        probe = self._policy_for((32, 32, 3))
        if probe.soft_labels:
            raise ValueError(
                f"Augment({policy!r}): a layer sees no labels, so it takes no label-mixing op "
                "(mixup, cutmix, mixup_or_cutmix, the 'strong' policy): use --augment for those"
            )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._register_call_context_args(seeds.STEP_SEED)  # the Trainer's step passes it
        self._built_policy = None

    def _policy_for(self, image_shape):
        return policies.get_policy(
            self.policy, num_classes=2, image_shape=tuple(image_shape), flip=self.flip
        )

    def build(self, input_shape):
        self._built_policy = self._policy_for(input_shape[1:])
        policies.check_policy(self._built_policy, input_shape[1:])  # a crop larger than the image

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._policy_for(input_shape[1:]).output_shape(input_shape[1:]))

    def call(self, images, training=None, step_seed=None):
        policy = self._built_policy
        if not training:
            transform = policy.eval_transform
            return images if transform is None else transform(images)
        if step_seed is None:
            seed = self.seed_generator.next()
        else:
            seed = step_seed if self.seed is None else seeds.fold_in(step_seed, self.seed)
        x = images if images.dtype in (tf.float32, tf.uint8) else tf.cast(images, tf.float32)
        out, _ = policy(x, tf.zeros(tf.shape(x)[:1], tf.int32), seed)
        return out if out.dtype == images.dtype else tf.cast(out, images.dtype)

    def get_config(self):
        return {**super().get_config(), "policy": self.policy, "seed": self.seed, "flip": self.flip}
