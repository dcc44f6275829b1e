"""Where the model comes from when it is not one of trainers/models/' names, and warm starts.

`--model` takes, besides a built-in name:
  path/to/file.py:function    a function in a Python file
  package.module:function     a function in an importable module
  path/to/saved.keras         a saved Keras model, fine-tuned as it is (its architecture and
                              weights)
and, from Python, any callable (`ExperimentConfig(model=my_fn)`).

A function is called as `fn(input_shape=(28, 28, 1), num_classes=10)` (plus `seed=` when it takes a
`seed` argument) and must return a Keras model mapping a batch of float32 images (in --input_range,
[0, 1] by default) to float logits of shape (batch, num_classes); `num_classes` is the task's
outputs: 1 for --task=binary and --task=regression. The model is built once before training to check
it (a bad path, a missing function, no Keras model, the wrong output shape: a ConfigError, one line
and exit 2).

`--init_from=RUN_DIR` or `--init_from=model.keras` copies weights into the model --model builds:
from the run's model.keras (its export), else from its latest checkpoint. Every weight must match in
shape, except the head (the last layer with weights), which stays freshly initialised when its size
differs: a new head for another number of classes. `--freeze_backbone` trains only that head, for
any model.
"""

import dataclasses
import importlib
import importlib.util
import inspect
import os
import sys
import zipfile

import numpy as np
from absl import logging

from framework import ConfigError, run_record


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # "builtin", "file", "module", "keras" or "callable"
    spec: object  # what --model said (a str, or the callable)
    path: str = ""  # file, module or .keras path
    function: str = ""  # the function's name (file, module)


def parse(model) -> Source:
    """What `--model` names (no file is read)."""
    if callable(model):
        return Source("callable", model)
    from trainers import models  # lazy: keeps TF out of --help

    if model in models.MODELS:
        return Source("builtin", model)
    if model.endswith(".keras"):
        return Source("keras", model, path=model)
    if ":" in model:
        where, function = model.rsplit(":", 1)
        kind = "file" if where.endswith(".py") or os.sep in where or "/" in where else "module"
        return Source(kind, model, path=where, function=function)
    return Source("unknown", model)


def is_custom(model) -> bool:
    return parse(model).kind != "builtin"


def describe(model) -> str:
    """What run_config.json records: the string, or a callable's module.qualname."""
    if callable(model):
        module = getattr(model, "__module__", "?")
        return f"callable:{module}.{getattr(model, '__qualname__', repr(model))}"
    return model


def check(model) -> None:
    """ConfigError unless the file, module and function exist (a .keras file must be a zip): what
    can be checked before the data is read. Imports a module or file to find its function."""
    source = parse(model)
    if source.kind in ("builtin", "callable"):
        return
    if source.kind == "unknown":
        from trainers import models  # lazy: keeps TF out of --help

        raise ConfigError(
            f"--model={model!r}: unknown; valid choices: {', '.join(models.MODELS)}, "
            "path/to/file.py:function, package.module:function or path/to/saved.keras"
        )
    if source.kind == "keras":
        if not os.path.isfile(source.path):
            raise ConfigError(f"--model={model}: no such file")
        if not zipfile.is_zipfile(source.path):
            raise ConfigError(
                f"--model={model}: not a Keras .keras file (a zip archive): corrupt or another "
                "format"
            )
        return
    _function(source)


def _function(source: Source):
    if not source.function.isidentifier():
        raise ConfigError(
            f"--model={source.spec}: {source.function!r} is not a function name "
            "(write path/to/file.py:function or package.module:function)"
        )
    if source.kind == "file":
        if not os.path.isfile(source.path):
            raise ConfigError(f"--model={source.spec}: no such file {source.path}")
        module = _import_file(source)
    else:
        try:
            module = importlib.import_module(source.path)
        except ImportError as err:
            raise ConfigError(
                f"--model={source.spec}: cannot import module {source.path!r}: {err}"
            ) from None
    fn = getattr(module, source.function, None)
    if fn is None or not callable(fn):
        found = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
        )
        raise ConfigError(
            f"--model={source.spec}: {source.path} has no function {source.function!r}"
            f"{f' (its functions: {found})' if found else ''}"
        )
    return fn


def _import_file(source: Source):
    name = "tfloops_model_" + "".join(
        c if c.isalnum() else "_" for c in os.path.abspath(source.path)
    )
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, source.path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's file: say what failed, in one line
        raise ConfigError(
            f"--model={source.spec}: importing {source.path} failed: "
            f"{type(err).__name__}: {' '.join(str(err).split())}"
        ) from None
    sys.modules[name] = module
    return module


def build(model, *, input_shape, num_outputs: int, seed=None):
    """The Keras model `model` (a custom source) gives for this input shape and output width,
    checked."""
    import keras  # lazy: keeps TF out of --help

    source = parse(model)
    if source.kind == "keras":
        # Registers the custom layers our own exports use.
        from trainers import models  # noqa: F401  # lazy: keeps TF out of --help

        try:
            built = keras.saving.load_model(source.path, compile=False)
        except Exception as err:  # a corrupt or foreign file: one line, exit 2
            raise ConfigError(
                f"--model={source.spec}: cannot load it: {type(err).__name__}: "
                f"{' '.join(str(err).split())[:300]}"
            ) from None
    else:
        fn = source.spec if source.kind == "callable" else _function(source)
        kwargs = dict(input_shape=tuple(int(d) for d in input_shape), num_classes=int(num_outputs))
        try:
            if "seed" in inspect.signature(fn).parameters:
                kwargs["seed"] = seed
        except (TypeError, ValueError):
            pass
        try:
            built = fn(**kwargs)
        except Exception as err:
            raise ConfigError(
                f"--model={describe(model)}: calling it with "
                f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items())} raised "
                f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            ) from None
    return check_model(
        built, input_shape=input_shape, num_outputs=num_outputs, what=f"--model={describe(model)}"
    )


def check_model(model, *, input_shape, num_outputs: int, what: str):
    """`model` itself if it is a Keras model mapping (2, *input_shape) float32 images to float
    (2, num_outputs) outputs; else a ConfigError saying which of these it is not."""
    import keras  # lazy: keeps TF out of --help
    import tensorflow as tf  # lazy: keeps TF out of --help

    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"{what}: returned {type(model).__name__}, not a Keras model (keras.Model)"
        )
    try:
        out = model(tf.zeros((2, *input_shape), tf.float32), training=False)
    except Exception as err:
        raise ConfigError(
            f"{what}: the model does not take images of shape {tuple(input_shape)}: "
            f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        ) from None
    if not tf.is_tensor(out) or not out.dtype.is_floating:
        raise ConfigError(
            f"{what}: the model must return one float tensor of logits, not {type(out).__name__}"
        )
    if tuple(out.shape) != (2, num_outputs):
        raise ConfigError(
            f"{what}: the model's output has shape (batch, {', '.join(map(str, out.shape[1:]))}); "
            f"this task needs (batch, {num_outputs}) (the number of classes; 1 for "
            "--task=binary or regression)"
        )
    return model


def head_layer(model):
    """The last layer that has weights: the head (kept trainable by freeze_backbone)."""
    for layer in reversed(model.layers):
        if layer.weights:
            return layer
    return None


def freeze_backbone(model) -> None:
    """Only the head (the last layer with weights, and the weightless layers after it) stays
    trainable; frozen BatchNormalization layers then run in inference mode (Keras' rule for
    trainable=False)."""
    head = head_layer(model)
    seen_head = False
    for layer in model.layers:
        seen_head = seen_head or layer is head
        layer.trainable = seen_head


# ---------------------------------------------------------------------------------- warm start


def check_init_from(path: str) -> None:
    """ConfigError unless `path` is a .keras file or a run directory with model.keras or a
    checkpoint."""
    if not path:
        return
    _init_file(path)


def _init_file(path: str):
    """('keras', file) or ('checkpoint', prefix) for --init_from=path."""
    import tensorflow as tf  # lazy: keeps TF out of --help

    if os.path.isfile(path):
        if not path.endswith(".keras") or not zipfile.is_zipfile(path):
            raise ConfigError(
                f"--init_from={path}: not a .keras model file (give a run directory or a .keras "
                "file)"
            )
        return "keras", path
    if not os.path.isdir(path):
        raise ConfigError(f"--init_from={path}: no such run directory or .keras file")
    exported = os.path.join(path, "model.keras")
    if os.path.isfile(exported):
        return "keras", exported
    # framework/controller.py's checkpoints (the last state; best/ holds the best evaluation's)
    checkpoint = tf.train.latest_checkpoint(
        os.path.join(path, "checkpoints")
    ) or tf.train.latest_checkpoint(path)
    if checkpoint is None:
        raise ConfigError(
            f"--init_from={path}: the directory holds no model.keras and no checkpoint "
            "(is it a run's --model_dir? did that run save a checkpoint?)"
        )
    return "checkpoint", checkpoint


def initial_values(path: str) -> list[np.ndarray]:
    """The values of the model variables of --init_from, in the model's variable order."""
    import keras  # lazy: keeps TF out of --help
    import tensorflow as tf  # lazy: keeps TF out of --help

    kind, where = _init_file(path)
    if kind == "keras":
        # Registers our custom layers.
        from trainers import models  # noqa: F401  # lazy: keeps TF out of --help

        try:
            model = keras.saving.load_model(where, compile=False)
        except Exception as err:
            raise ConfigError(
                f"--init_from={path}: cannot load {where}: {type(err).__name__}: "
                f"{' '.join(str(err).split())[:300]}"
            ) from None
        return [np.asarray(v) for v in model.variables]
    # framework/checkpointing.py saves model_variables as a list: keys model_variables/<i>/...
    reader = tf.train.load_checkpoint(where)
    keys = {k for k in reader.get_variable_to_shape_map() if k.startswith("model_variables/")}
    count = len({k.split("/")[1] for k in keys})
    return [
        reader.get_tensor(f"model_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE") for i in range(count)
    ]


def warm_start(model, values: list[np.ndarray], *, path: str, what: str, log: bool = True) -> None:
    """Assigns `values` to `model.variables`; a head of another size is left as built (logged unless
    `log` is False: the check before training builds the model once more)."""
    variables = list(model.variables)
    head = head_layer(model)
    head_ids = {id(v) for v in head.variables} if head is not None else set()
    mismatched = [
        i for i, (v, x) in enumerate(zip(variables, values)) if tuple(v.shape) != tuple(x.shape)
    ]
    if len(values) != len(variables) or any(id(variables[i]) not in head_ids for i in mismatched):
        raise ConfigError(
            f"--init_from={path}: its weights do not fit {what} ({len(values)} variables there, "
            f"{len(variables)} here{_first_mismatch(variables, values, mismatched)}); give "
            f"the model options of that run{_run_options(path)}"
        )
    for i, (variable, value) in enumerate(zip(variables, values)):
        if i not in mismatched:
            variable.assign(value)
    if not log:
        return
    if mismatched:
        logging.info(
            "--init_from=%s: a new head (%s: another output size), every other weight from there",
            path,
            head.name,
        )
    else:
        logging.info("--init_from=%s: every weight from there", path)


def _first_mismatch(variables, values, mismatched) -> str:
    if len(values) != len(variables) or not mismatched:
        return ""
    i = next(i for i in mismatched)
    return (
        f"; first: {variables[i].path} is {tuple(variables[i].shape)} here, "
        f"{tuple(values[i].shape)} there"
    )


def _run_options(path: str) -> str:
    """', e.g. model=cnn widths=...' from the run's run_config.json, when there is one."""
    try:
        recorded = run_record.read(path) if os.path.isdir(path) else None
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        return ""
    shown = [
        f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
        for k in (
            "model",
            "widths",
            "dense_widths",
            "padding",
            "pool",
            "activation",
            "task",
            "classes",
        )
        for v in [recorded.get(k)]
        if v not in (None, "", [], ())
    ]
    return f": {' '.join(shown)}" if shown else ""
