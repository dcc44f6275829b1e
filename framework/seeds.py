"""The step's random seed: a pure function of (run seed, step, replica), owned by the engine.

The train step derives one stateless seed per step and replica (`step_seed`) and hands it to what
draws random numbers in the step: the task's `prepare` (batch augmentation), and the model's layers
that take one. A layer takes the step's seed by accepting a `step_seed` keyword in `call()` and
registering it as a Keras call-context argument, the way `training` reaches every layer:

    class MyNoise(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._register_call_context_args(seeds.STEP_SEED)

        def call(self, x, training=None, step_seed=None): ...

The step then calls the model with `step_seed=` (`call_with_step_seed`); a Sequential or functional
model passes it to such layers among its own layers. No state is kept between steps or threads:
the seed is an argument of the call, like `training`.
"""

import functools
import inspect

import tensorflow as tf
from absl import logging

# One counter-based algorithm everywhere: "auto_select" may pick different ones eagerly and under
# XLA.
ALG = "philox"
STEP_SEED = "step_seed"  # the call argument a layer declares to get the step's seed

fold_in = functools.partial(tf.random.experimental.stateless_fold_in, alg=ALG)


def step_seed(seed: int, step, replica_id=0) -> tf.Tensor:
    """Stateless seed (int32 [2]) for one step on one replica; `step` and `replica_id` may be
    tensors.

    Reproducible from (seed, step, replica_id), different across replicas, and a resumed run that
    restores `step` continues the same sequence. Steps are folded in modulo 2**32 (int32, as XLA on
    TPU wants int32 seeds).
    """
    seed = int(seed)
    base = tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int32)
    return fold_in(fold_in(base, as_int32(step)), as_int32(replica_id))


def low32(x) -> tf.Tensor:
    """The low 32 bits of an int64 tensor as int32 (two's complement)."""
    return tf.bitcast(tf.cast(tf.bitwise.bitwise_and(x, 0xFFFFFFFF), tf.uint32), tf.int32)


def as_int32(x) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    return low32(x) if x.dtype == tf.int64 else tf.cast(x, tf.int32)


def _declares_step_seed(layer) -> bool:
    return STEP_SEED in getattr(layer, "_call_context_args", ())


def takes_step_seed(model) -> bool:
    """Whether one of `model`'s own layers declares the `step_seed` call argument (see the module
    docstring) and the model's call passes keyword arguments on to its layers."""
    params = inspect.signature(model.call).parameters.values()
    if not any(p.kind == p.VAR_KEYWORD or p.name == STEP_SEED for p in params):
        return False
    return any(_declares_step_seed(layer) for layer in model.layers)


def call_with_step_seed(model, seed):
    """`model` as the step calls it: with `step_seed=seed` where its layers take one, else itself.
    A layer that declares the argument but cannot get it (inside a nested model) is named in a
    warning: it draws from its own seed instead."""
    reached = {id(layer) for layer in model.layers} if takes_step_seed(model) else set()
    missed = [
        layer.name
        for layer in model._flatten_layers(include_self=False)
        if _declares_step_seed(layer) and id(layer) not in reached
    ]
    if missed:
        logging.warning(
            "%s take the step's seed only as layers of the model itself (not of a nested model, "
            "nor of a model whose call takes no **kwargs): they draw from their own seed instead",
            ", ".join(missed),
        )
    if not reached:
        return model
    return functools.partial(model, **{STEP_SEED: seed})
