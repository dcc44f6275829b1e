"""Evaluation extras: accuracy on transformed test sets, and augmentation moved to the host pipeline."""
import numpy as np
import tensorflow as tf

from augment import step_seed

TRANSFORMS = {
    "flip_ud": lambda x: x[:, ::-1],
    "flip_lr": lambda x: x[:, :, ::-1],
    "rot90": lambda x: np.rot90(x, k=1, axes=(1, 2)),
    "invert": lambda x: 255 - x if x.dtype == np.uint8 else 1.0 - x,
}


def transformed_accuracies(controller, data, names) -> dict[str, float]:
    """`test_<name>_accuracy` for each transform of the test set (the model is not retrained)."""
    x_test, y_test = data.evals["test"]
    found = {}
    for name in names:
        x = np.ascontiguousarray(TRANSFORMS[name](x_test))
        if x.shape != x_test.shape:  # rot90 of a non-square image
            raise ValueError(f"--eval_transforms={name}: changes the image shape {x_test.shape[1:]} -> "
                             f"{x.shape[1:]}; use square images")
        data.evals[f"test_{name}"] = (x, y_test)
        metrics = controller.evaluate(f"test_{name}")
        found[f"test_{name}_accuracy"] = metrics[f"test_{name}_accuracy"]
    return found


def host_augment_fn(policy, seed: int):
    """Run `policy` in the tf.data map (CPU) with the same per-(step, replica) seeds as on the device."""
    def host_fn(batch, step, replica_id):
        images, labels = batch[0], batch[1]
        images = tf.cast(images, tf.float32) / 255.0
        return policy(images, labels, step_seed(seed, step, replica_id))
    return host_fn
