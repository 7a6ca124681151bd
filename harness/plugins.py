"""One registry shape for every kind of plugin (methods, stages, rewards, training objectives,
metrics, executors): built-ins register
with a decorator, third-party packages through an entry-point group, unknown names fail with
"did you mean". Built-in modules are imported on first use, so `validate` and `--help` stay fast.

Every plugin declares its parameters as a pydantic `Params` model (types, bounds, defaults, a
description per field): `harness validate` checks an arm's params against it, `harness methods`
prints it, and the plan stores the validated values, so a plugin reads typed values."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from harness.errors import HarnessError, did_you_mean


class Params(BaseModel):
    """Base of a plugin's parameters: unknown keys are errors, values are typed and bounded.
    Validators may read `info.context["tasks"]` (the arm's task keys) and `["kind"]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """A plugin that takes no parameters."""


class Plugin:
    """What every plugin class shares: its registered name, a description and its Params."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = NoParams

    @property
    def defaults(self) -> dict[str, Any]:
        """Every parameter with its default, from the Params model."""
        return param_defaults(self.Params)


def param_defaults(params: type[BaseModel]) -> dict[str, Any]:
    return {name: field.get_default(call_default_factory=True) for name, field in params.model_fields.items()}


def param_rows(params: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) per field, for `harness methods` / `harness stages`."""
    rows = []
    for name, field in params.model_fields.items():
        annotation = field.annotation
        kind = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
        bounds = ", ".join(
            f"{symbol} {getattr(m, attr)}"
            for m in field.metadata
            for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
            if getattr(m, attr, None) is not None
        )
        rows.append(
            (
                name,
                kind + (f" ({bounds})" if bounds else ""),
                repr(field.get_default(call_default_factory=True)),
                field.description or "",
            )
        )
    return rows


class Registry:
    def __init__(
        self,
        kind: str,
        group: str,
        builtin_modules: list[str] | tuple[str, ...] = (),
        base: type | None = None,
        adapt=None,
    ):
        self.kind, self.group, self.builtin_modules = kind, group, list(builtin_modules)
        self.base = base  # every registered plugin must be a subclass (checked at registration)
        self.adapt = adapt  # turns a shorthand (a reward function) into a plugin class first
        self.entries: dict[str, Any] = {}
        self.loaded = False

    def register(self, name: str):
        """Decorator; a class learns its registered name (`cls.name`)."""

        def decorate(obj):
            registered = obj
            obj = self.adapt(obj) if self.adapt else obj
            if name in self.entries and self.entries[name] is not obj:
                raise ValueError(
                    f"{self.kind} '{name}' is registered twice ({self.entries[name].__module__} and {obj.__module__})"
                )
            if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise HarnessError(
                    f"{self.kind} plugin '{name}' ({getattr(obj, '__module__', '?')}."
                    f"{getattr(obj, '__qualname__', obj)!s}) is not a subclass of "
                    f"{self.base.__module__}.{self.base.__qualname__}",
                    fix=f"derive it from {self.base.__qualname__} and declare its Params",
                )
            if isinstance(obj, type):
                obj.name = name
            self.entries[name] = obj
            return registered

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

    # Read-only mapping view, in registration order (the order reports list metrics in).
    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self.entries

    def __getitem__(self, name: str):
        return self.get(name)

    def __iter__(self):
        self.load()
        return iter(list(self.entries))

    def __len__(self) -> int:
        self.load()
        return len(self.entries)

    def items(self):
        self.load()
        return list(self.entries.items())

    def values(self):
        self.load()
        return list(self.entries.values())
