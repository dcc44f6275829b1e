"""Optimizers by name: `build_optimizer("sgd", 0.1, momentum=0.9, nesterov=True,
weight_decay=5e-4)`.

Weight decay is Keras 3's decoupled decay for every optimizer: each step does
`var -= learning_rate * weight_decay * var` (as in AdamW), on every variable, biases and BatchNorm
included. PyTorch's SGD `weight_decay` instead adds `weight_decay * var` to the gradient, which
momentum then accumulates, so the same number is not the same regularisation.
"""

import keras

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb", "rmsprop", "lion", "adabound")

# Which optional arguments each optimizer takes; the others refuse them. Every default is Keras'
# (momentum 0: Keras' SGD and RMSprop have none unless asked).
_TAKES = {
    "sgd": {"momentum", "nesterov"},
    "adam": {"beta_1", "beta_2", "epsilon"},
    "adamw": {"beta_1", "beta_2", "epsilon"},
    "lamb": {"beta_1", "beta_2", "epsilon"},
    "rmsprop": {"momentum", "rho", "epsilon"},
    "lion": {"beta_1", "beta_2"},
    "adabound": {"beta_1", "beta_2", "epsilon"},
}


# The options of a momentum optimizer, and which optimizers take them.
TAKES_MOMENTUM = {
    name: tuple(o for o in OPTIMIZERS if name in _TAKES[o]) for name in ("momentum", "nesterov")
}


def build_optimizer(
    name,
    learning_rate,
    *,
    momentum=0.0,
    nesterov=False,
    weight_decay=0.0,
    beta_1=None,
    beta_2=None,
    epsilon=None,
    rho=None,
    global_clipnorm=None,
):
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
        if (
            isinstance(learning_rate, bool)
            or not isinstance(learning_rate, (int, float))
            or not learning_rate > 0
        ):
            raise ValueError(
                f"`learning_rate` ({learning_rate!r}) must be a positive number or a "
                f"keras.optimizers.schedules.LearningRateSchedule"
            )
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` ({weight_decay!r}) must be >= 0")
    given = {
        "momentum": momentum or None,
        "nesterov": nesterov or None,
        "beta_1": beta_1,
        "beta_2": beta_2,
        "epsilon": epsilon,
        "rho": rho,
    }
    for arg, value in given.items():
        if value is not None and arg not in _TAKES[name]:
            raise ValueError(
                f"`{arg}` ({value!r}) does not apply to {name}; it takes "
                f"{', '.join(sorted(_TAKES[name]))}"
            )
    if "momentum" in _TAKES[name] and not 0 <= momentum < 1:
        raise ValueError(f"`momentum` ({momentum!r}) must be in [0, 1)")

    kwargs = {k: v for k, v in given.items() if v is not None}
    if "momentum" in _TAKES[name]:
        kwargs["momentum"] = momentum
    common = {
        "learning_rate": learning_rate,
        "global_clipnorm": global_clipnorm,
        # None rather than 0.0: Keras skips the decay ops entirely.
        "weight_decay": weight_decay or None,
    }
    if name == "adamw":
        common["weight_decay"] = float(weight_decay)  # AdamW refuses None
    cls = {
        "sgd": keras.optimizers.SGD,
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "lamb": keras.optimizers.Lamb,
        "rmsprop": keras.optimizers.RMSprop,
        "lion": keras.optimizers.Lion,
        "adabound": AdaBound,
    }[name]
    return cls(**common, **kwargs)


@keras.saving.register_keras_serializable(package="tfloops")
class AdaBound(keras.optimizers.Optimizer):
    """AdaBound (Luo et al., 2019; the FEC notebook's optimizer): Adam whose per-weight step size is
    clipped to [final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))], bounds that
    close in on final_lr, so it starts like Adam and ends like SGD at final_lr. As the paper's code,
    final_lr follows the learning rate: it is scaled by lr_t / the learning rate given (a number;
    with a schedule it stays)."""

    def __init__(
        self,
        learning_rate=1e-3,
        final_lr=0.1,
        beta_1=0.9,
        beta_2=0.999,
        gamma=1e-3,
        epsilon=1e-8,
        name="adabound",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.final_lr, self.beta_1, self.beta_2 = final_lr, beta_1, beta_2
        self.gamma, self.epsilon = gamma, epsilon
        self.base_lr = float(learning_rate) if isinstance(learning_rate, (int, float)) else None

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        lr, gradient = ops.cast(learning_rate, variable.dtype), ops.cast(gradient, variable.dtype)
        t = ops.cast(self.iterations + 1, variable.dtype)
        m, v = (
            self._m[self._get_variable_index(variable)],
            self._v[self._get_variable_index(variable)],
        )
        self.assign(m, self.beta_1 * m + (1 - self.beta_1) * gradient)
        self.assign(v, self.beta_2 * v + (1 - self.beta_2) * ops.square(gradient))
        step = lr * ops.sqrt(1 - ops.power(self.beta_2, t)) / (1 - ops.power(self.beta_1, t))
        final_lr = self.final_lr * (lr / self.base_lr if self.base_lr else 1.0)
        lower = final_lr * (1 - 1 / (self.gamma * t + 1))
        upper = final_lr * (1 + 1 / (self.gamma * t))
        self.assign_sub(variable, ops.clip(step / (ops.sqrt(v) + self.epsilon), lower, upper) * m)

    def get_config(self):
        return {
            **super().get_config(),
            "final_lr": self.final_lr,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "gamma": self.gamma,
            "epsilon": self.epsilon,
        }
