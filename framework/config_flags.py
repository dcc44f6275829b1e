"""absl flags from any config dataclass, and the config back from parsed flags.

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class MyConfig:
        depth: int = option(3, "Layers in the model.")
        widths: tuple = option((), "Layer widths, e.g. --widths=64,128.")

    config_flags.define_flags(MyConfig, defaults={"depth": 5}, key_module="__main__")
    ...                                   # absl parses the command line
    config = config_flags.from_flags(MyConfig)

The help text lives on the field (`metadata={"help": ...}`, which `framework.config.option` writes),
so a flag cannot appear without it. bool, int, float and str fields (and `str | None`) become flags
of that type; a tuple field becomes a list flag whose items are ints, or strs where the field's
metadata says `"item": str`. With `key_module`, the flags are key flags of that module: its `--help`
lists them, except fields marked `advanced`, which only `--helpfull` shows. `flag_dict(MyConfig,
given_only=True)` is what the command line gave (trainers/cli.py puts it over a recipe's values).

This module imports no TensorFlow, so `--help` answers without loading it.
"""

import dataclasses
import sys

from absl import flags

from framework.config import ConfigError


def define_flags(
    config_cls,
    *,
    defaults: dict | None = None,
    flag_values: flags.FlagValues = flags.FLAGS,
    key_module: str | None = None,
) -> None:
    """Defines a flag per field of `config_cls`, with `defaults` replacing the fields' defaults.

    May be called again (a notebook re-running a cell, or two trainers in one process): a flag that
    is already defined keeps its definition and only gets the new default.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(defaults or {}) - set(fields))
    if unknown:
        raise ValueError(f"defaults {unknown} are not fields of {config_cls.__name__}")
    if key_module == "__main__":
        key_module = sys.argv[0]  # how absl names the main module
    for name, field in fields.items():
        default = _flag_value((defaults or {}).get(name, field.default))
        if name in flag_values:
            flag_values.set_default(name, default)
        else:
            module = sys.argv[0] if config_cls.__module__ == "__main__" else config_cls.__module__
            _define(field, default, flag_values, module_name=module)
        if key_module and not field.metadata.get("advanced"):
            flag_values.register_key_flag_for_module(key_module, flag_values[name])


def from_flags(config_cls, *, flag_values: flags.FlagValues = flags.FLAGS, **overrides):
    """A `config_cls` from parsed flags (`overrides` win); a bad value raises ConfigError."""
    return config_cls(**{**flag_dict(config_cls, flag_values=flag_values), **overrides})


def flag_dict(
    config_cls, *, flag_values: flags.FlagValues = flags.FLAGS, given_only: bool = False
) -> dict:
    """{field: value} from parsed flags, tuples converted; `given_only`: the command line's flags
    only."""
    values = {}
    for field in dataclasses.fields(config_cls):
        flag = flag_values[field.name]
        if given_only and not flag.present:
            continue
        values[field.name] = _to_tuple(field, flag.value) if _kind(field) == "tuple" else flag.value
    return values


def help_text(field: dataclasses.Field) -> str:
    text = field.metadata.get("help")
    if not text:
        raise ValueError(f"field {field.name!r} has no help: write it as option(default, 'help')")
    return text


def _define(field, default, flag_values, module_name):
    kind = _kind(field)
    define = {
        "bool": flags.DEFINE_bool,
        "int": flags.DEFINE_integer,
        "float": flags.DEFINE_float,
        "str": flags.DEFINE_string,
        "tuple": flags.DEFINE_list,
    }[kind]
    define(field.name, default, help_text(field), flag_values=flag_values, module_name=module_name)


def _kind(field) -> str:
    """The field's type as one of bool, int, float, str, tuple (annotations may be strings)."""
    name = (
        field.type
        if isinstance(field.type, str)
        else getattr(field.type, "__name__", str(field.type))
    )
    name = name.replace(" ", "")
    if name in ("str|None", "Optional[str]", "typing.Optional[str]"):
        return "str"
    if name not in ("bool", "int", "float", "str", "tuple"):
        raise ValueError(
            f"field {field.name!r}: type {field.type!r} has no flag (bool, int, float, str, tuple)"
        )
    return name


def _flag_value(value):
    """A config value as absl holds it: tuples are lists of strings."""
    return [str(v) for v in value] if isinstance(value, tuple) else value


def _to_tuple(field, value) -> tuple:
    item = field.metadata.get("item", int)
    try:
        return tuple(item(v) for v in value or ())
    except ValueError as err:
        raise ConfigError(
            f"--{field.name}={','.join(map(str, value))}: expected integers, "
            f"e.g. --{field.name}=64,64"
        ) from err
