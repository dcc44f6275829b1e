"""Optimizers by name: `build_optimizer("sgd", 0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)`.

Weight decay is Keras 3's decoupled decay for every optimizer: each step does
`var -= learning_rate * weight_decay * var` (as in AdamW), on every variable, biases and BatchNorm
included. PyTorch's SGD `weight_decay` instead adds `weight_decay * var` to the gradient, which momentum
then accumulates, so the same number is not the same regularisation.
"""
import keras

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb", "rmsprop", "lion")

# Which optional arguments each optimizer takes; the others refuse them. Every default is Keras'
# (momentum 0: Keras' SGD and RMSprop have none unless asked).
_TAKES = {
    "sgd": {"momentum", "nesterov"},
    "adam": {"beta_1", "beta_2", "epsilon"},
    "adamw": {"beta_1", "beta_2", "epsilon"},
    "lamb": {"beta_1", "beta_2", "epsilon"},
    "rmsprop": {"momentum", "rho", "epsilon"},
    "lion": {"beta_1", "beta_2"},
}


# The options of a momentum optimizer, and which optimizers take them.
TAKES_MOMENTUM = {name: tuple(o for o in OPTIMIZERS if name in _TAKES[o]) for name in ("momentum", "nesterov")}


def build_optimizer(name, learning_rate, *, momentum=0.0, nesterov=False, weight_decay=0.0,
                    beta_1=None, beta_2=None, epsilon=None, rho=None, global_clipnorm=None):
    """Returns a Keras optimizer.

    Args:
      name: one of OPTIMIZERS.
      learning_rate: positive float or `keras.optimizers.schedules.LearningRateSchedule`.
        (Lion wants a learning rate about 3-10x smaller than AdamW's.)
      momentum: sgd and rmsprop only; 0 (Keras' default) is plain SGD / RMSprop.
      nesterov: sgd only.
      weight_decay: decoupled weight decay (see module docstring); 0 disables it. For adamw, 0 makes
        it plain Adam.
      beta_1, beta_2: adam, adamw, lamb, lion; None keeps the Keras default.
      epsilon: adam, adamw, lamb, rmsprop; None keeps the Keras default.
      rho: rmsprop only; None keeps the Keras default (0.9).
      global_clipnorm: clip the global gradient norm to this value (None: no clipping).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"`name` ({name!r}) must be one of {', '.join(OPTIMIZERS)}")
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                or not learning_rate > 0:
            raise ValueError(f"`learning_rate` ({learning_rate!r}) must be a positive number or a "
                             f"keras.optimizers.schedules.LearningRateSchedule")
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` ({weight_decay!r}) must be >= 0")
    given = {"momentum": momentum or None, "nesterov": nesterov or None, "beta_1": beta_1, "beta_2": beta_2,
             "epsilon": epsilon, "rho": rho}
    for arg, value in given.items():
        if value is not None and arg not in _TAKES[name]:
            raise ValueError(f"`{arg}` ({value!r}) does not apply to {name}; it takes "
                             f"{', '.join(sorted(_TAKES[name]))}")
    if "momentum" in _TAKES[name] and not 0 <= momentum < 1:
        raise ValueError(f"`momentum` ({momentum!r}) must be in [0, 1)")

    kwargs = {k: v for k, v in given.items() if v is not None}
    if "momentum" in _TAKES[name]:
        kwargs["momentum"] = momentum
    common = {"learning_rate": learning_rate, "global_clipnorm": global_clipnorm,
              # None rather than 0.0: Keras skips the decay ops entirely.
              "weight_decay": weight_decay or None}
    if name == "adamw":
        common["weight_decay"] = float(weight_decay)  # AdamW refuses None
    cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
           "adamw": keras.optimizers.AdamW, "lamb": keras.optimizers.Lamb,
           "rmsprop": keras.optimizers.RMSprop, "lion": keras.optimizers.Lion}[name]
    return cls(**common, **kwargs)
