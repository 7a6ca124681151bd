"""One registry shape for every kind of plugin (methods, stages, rewards): built-ins register
with a decorator, third-party packages through an entry-point group, unknown names fail with
"did you mean". Built-in modules are imported on first use, so `validate` and `--help` stay fast."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from harness.errors import HarnessError, did_you_mean


class Registry:
    def __init__(self, kind: str, group: str, builtin_modules: list[str] | tuple[str, ...] = ()):
        self.kind, self.group, self.builtin_modules = kind, group, list(builtin_modules)
        self.entries: dict[str, Any] = {}
        self.loaded = False

    def register(self, name: str):
        """Decorator; a class learns its registered name (`cls.name`)."""
        def decorate(obj):
            if name in self.entries and self.entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice "
                                 f"({self.entries[name].__module__} and {obj.__module__})")
            if isinstance(obj, type):
                obj.name = name
            self.entries[name] = obj
            return obj

        return decorate

    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True
        for module in self.builtin_modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            if ep.name not in self.entries:
                self.register(ep.name)(ep.load())

    def get(self, name: str):
        self.load()
        if name not in self.entries:
            raise HarnessError(f"unknown {self.kind} '{name}'", fix=did_you_mean(name, self.entries))
        return self.entries[name]

    def names(self) -> list[str]:
        self.load()
        return sorted(self.entries)
