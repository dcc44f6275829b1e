"""airbench's lookahead: every `every` steps, average <- lerp(average, weights, 1 - rho), weights <-
average.

rho = decay ** every * (step / total_steps) ** 3: almost no averaging early (the net moves fast),
strong averaging at the end (airbench94: decay 0.95 every 5 steps). It covers every float variable
of the model, BatchNorm's moving statistics included, as airbench's state_dict does.

Keras has an EMA of weights (`use_ema`, `ema_overwrite_frequency`), but with a constant momentum
and over trainable weights only; this is the ramped version airbench94 trains with.
The update runs at the end of the replicated step, in a merge_call (cross-replica context inside the
step's program), so on a TPU it is no separate program between steps.
"""

import tensorflow as tf

RAMP_POWER = 3.0


class Lookahead:
    def __init__(self, model, *, every: int, decay: float, total_steps: int):
        """Build under `strategy.scope()`: the averages are mirrored like the weights."""
        self.every, self.decay, self.total_steps = (
            int(every),
            float(decay),
            max(int(total_steps), 1),
        )
        variables = [v.value if hasattr(v, "value") else v for v in model.variables]  # Keras -> tf
        self.weights = [v for v in variables if v.dtype.is_floating]
        self.averages = [
            tf.Variable(w.read_value(), trainable=False, name=f"lookahead_{i}")
            for i, w in enumerate(self.weights)
        ]

    def rho(self, step):
        frac = tf.cast(step, tf.float32) / float(self.total_steps)
        return self.decay**self.every * tf.minimum(frac, 1.0) ** RAMP_POWER

    def maybe_update(self, step):
        """After step number `step` (1-based): update when it is a multiple of `every`."""
        tf.cond(tf.equal(step % self.every, 0), lambda: self._update(self.rho(step)), tf.no_op)

    def _update(self, rho):
        # Cross-replica assign: every replica gets the first replica's result. Weights agree across
        # replicas anyway; unsynchronised BatchNorm statistics take the first replica's.
        for weight, average in zip(self.weights, self.averages):
            average.assign(average + tf.cast(1.0 - rho, average.dtype) * (weight - average))
            weight.assign(average)
        return tf.no_op()
