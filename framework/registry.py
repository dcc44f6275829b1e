"""Registries: extension points whose entries declare themselves where they are defined.

A model, a data source, an augmentation op or a task registers itself with a decorator in its own
file, with its properties (options, checks, whether it compiles with XLA, ...) beside its builder:

    MODELS = Registry("model", package="trainers.models")

    @MODELS.register("mlp", widths=(128,))
    def mlp(input_shape, num_classes, widths): ...

A registry that names a `package` imports every module of that package on its first lookup, so
adding an entry is adding one file there; nothing else lists it. Entries registered anywhere else
(a notebook cell, a user's module) count as well.
"""

import dataclasses
import importlib
import importlib.util
import pkgutil
import sys
from typing import Any, Callable

from framework.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered builder and the properties it declared with it."""

    name: str
    fn: Callable
    properties: dict

    def __getattr__(self, key: str) -> Any:
        try:
            return self.properties[key]
        except KeyError:
            raise AttributeError(f"{self.name!r} declares no {key!r}") from None

    def get(self, key: str, default=None):
        return self.properties.get(key, default)


class Registry:
    """Names -> entries of one kind ("model", "op", ...); `flag` names the option in errors."""

    def __init__(self, kind: str, *, package: str | None = None, flag: str | None = None):
        self.kind, self.package, self.flag = kind, package, flag or kind
        self._entries: dict[str, Entry] = {}
        self._loaded = package is None

    def register(self, name: str | None = None, **properties) -> Callable:
        """Decorator: registers `fn` under `name` (default: its own name); returns `fn`
        unchanged."""

        def add(fn: Callable) -> Callable:
            key = name or fn.__name__
            old = self._entries.get(key)
            if old is not None and _origin(old.fn) != _origin(fn):
                raise ValueError(
                    f"{self.kind} {key!r} is registered twice: by {_origin(old.fn)} and by "
                    f"{_origin(fn)}; rename one"
                )
            self._entries[key] = Entry(key, fn, dict(properties))
            return fn

        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load(self, name: str | None = None) -> None:
        """Imports every module of the package, once. For a `name` not registered yet, first the
        module of that name alone (an entry in a file of its own name, as trainers/<name>.py is):
        when it registers `name`, nothing else is imported."""
        if self._loaded or name in self._entries:
            return
        if name and name.isidentifier():
            module = f"{self.package}.{name}"
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
                if name in self._entries:
                    return
        self._loaded = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            full = f"{self.package}.{module.name}"
            try:
                importlib.import_module(full)
            except ModuleNotFoundError as err:
                if err.name != full:  # a missing dependency of a file that is there: a real error
                    raise
                # else the file went away between the listing and the import: nothing to register

    def reload(self) -> None:
        """Look for new modules in the package again (a file added while the process runs)."""
        self._loaded = self.package is None
        importlib.invalidate_caches()
        self._load()

    def __contains__(self, name: str) -> bool:
        self._load(name)
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        """The entry, or a ConfigError naming the option, the value and the valid names."""
        self._load(name)
        if name not in self._entries:
            raise ConfigError(
                f"--{self.flag}={name!r}: unknown; valid choices: {', '.join(self.names())}"
            )
        return self._entries[name]


def _origin(fn: Callable) -> str:
    module = getattr(fn, "__module__", "?")
    if module == "__main__":  # `python -m pkg.mod` registers what `import pkg.mod` registers
        module = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", module)
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"
