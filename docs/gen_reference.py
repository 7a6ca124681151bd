"""MkDocs hook: the reference tables of the site, built from the code at build time so they cannot drift.

A page asks for a table with a marker line, `<!-- harness-reference: NAME -->`; NAME is one of
REFERENCES below. The experiment YAML and golden-set references walk the pydantic schema (every
field, its type, bounds, default and description); the methods and stages references read the
plugin registries and each plugin's Params through `harness.plugins.param_rows`, the rows
`harness methods` and `harness stages` print; the commands reference reads the Typer app, as
`--help` does. An unknown marker fails the build.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

MARKER = re.compile(r"^<!-- harness-reference: ([a-z_]+) -->$", re.MULTILINE)
LONGEST_DEFAULT = 48  # characters of a default shown in a table (prompt templates are longer)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace every reference marker of a page by its generated Markdown."""

    def expand(match: re.Match) -> str:
        name = match.group(1)
        if name not in REFERENCES:
            raise ValueError(
                f"{page.file.src_path}: unknown reference marker '{name}'; use one of {sorted(REFERENCES)}"
            )
        return REFERENCES[name]()

    return MARKER.sub(expand, markdown)


# ----------------------------------------------------------------------------- schema tables


def cell(text: str) -> str:
    """Text that stays one table cell and shows as written (no HTML tags, no column breaks)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def code(text: str) -> str:
    """A code span in a table cell: Python-Markdown keeps a `|` inside backticks in its cell."""
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def type_text(annotation: Any) -> str:
    """A field's type as a YAML writer reads it: `int`, `"a" | "b"`, `list[str]`, `Budget`."""
    origin = get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in get_args(annotation))
    if origin is typing.Annotated:
        return type_text(get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(type_text(a) for a in get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def bounds_text(field) -> str:
    symbols = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="))
    found = [f"{symbol} {getattr(m, attr)}" for m in field.metadata for attr, symbol in symbols if hasattr(m, attr)]
    found += [f"matches {getattr(m, 'pattern')}" for m in field.metadata if getattr(m, "pattern", None)]
    if get_origin(field.annotation) is typing.Annotated:  # PositiveInt and the like inside containers
        found += [str(m) for m in get_args(field.annotation)[1:]]
    return ", ".join(found)


def default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    shown = "null" if value is None else repr(value)
    if isinstance(value, bool):
        shown = str(value).lower()
    if len(shown) > LONGEST_DEFAULT:
        shown = shown[: LONGEST_DEFAULT - 1] + "…"
    return code(shown)


def nested_models(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """Pydantic models inside a field's type, each with the path suffix that reaches it."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and len(args) == 2:
        return [(".<key>" + suffix, model) for suffix, model in nested_models(args[1])]
    if origin is list and args:
        return [("[]" + suffix, model) for suffix, model in nested_models(args[0])]
    if origin in (typing.Union, types.UnionType):
        return [found for a in args for found in nested_models(a)]
    return []


def summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, or nothing (pydantic's own is not ours)."""
    doc = model.__doc__ or ""
    if model.__doc__ == BaseModel.__doc__ or not doc.strip():
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def schema_reference(root: type[BaseModel], root_path: str, level: int = 3) -> str:
    """One section per model reachable from root (depth first, each once), one table row per field."""
    sections, seen = [], set()

    def visit(model: type[BaseModel], path: str) -> None:
        if model in seen:
            return
        seen.add(model)
        rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        children = []
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            kind = type_text(field.annotation)
            bounds = bounds_text(field)
            rows.append(
                f"| {code(name)} | {code(kind)}{' (' + code(bounds) + ')' if bounds else ''} "
                f"| {default_text(field)} | {cell(field.description or '')} |"
            )
            for suffix, child in nested_models(field.annotation):
                children.append((f"{path}.{name}{suffix}".lstrip("."), child))
        title = f"`{path}`" if path else "top level"
        text = summary(model)
        sections.append(
            f"{'#' * level} {title}\n\n"
            + (f"{cell(text)}\n\n" if text else "")
            + f"Schema class: `{model.__module__}.{model.__qualname__}`.\n\n"
            + "\n".join(rows)
            + "\n"
        )
        for child_path, child in children:
            visit(child, child_path)

    visit(root, root_path)
    return "\n".join(sections)


def experiment_reference() -> str:
    from harness.config.schema import Experiment

    return schema_reference(Experiment, "")


def golden_set_reference() -> str:
    from harness.config.golden_set import GoldenSet

    return schema_reference(GoldenSet, "")


# ----------------------------------------------------------------------------- plugin tables


def params_table(params: type[BaseModel]) -> str:
    """The rows `harness methods` / `harness stages` print for one plugin's Params."""
    from harness.plugins import param_rows

    rows = param_rows(params)
    if not rows:
        return "No parameters.\n"
    lines = ["| parameter | type | default | description |", "| --- | --- | --- | --- |"]
    for name, kind, default, description in rows:
        default = "required" if default == "PydanticUndefined" else default
        shown = default if len(default) <= LONGEST_DEFAULT else default[: LONGEST_DEFAULT - 1] + "…"
        lines.append(f"| {code(name)} | {code(kind)} | {code(shown)} | {cell(description)} |")
    return "\n".join(lines) + "\n"


def plugin_section(plugin, trained_by: str) -> str:
    head = f"### `{plugin.name}`\n\n{cell(plugin.description)}\n\n"
    applies = getattr(plugin, "applies_to", None)
    facts = []
    if applies:
        facts.append(f"Applies to: {', '.join(f'`{kind}`' for kind in sorted(applies))}.")
    if trained_by:
        facts.append(f"Trained by: {trained_by}.")
    return head + (" ".join(facts) + "\n\n" if facts else "") + params_table(plugin.Params)


def methods_reference() -> str:
    from harness.methods import get_method, method_names

    sections = []
    for name in method_names():
        method = get_method(name)
        trained_by = ", ".join(f"`{kind}`: {objective}" for kind, objective in method.objective.items())
        sections.append(plugin_section(method, trained_by))
    return "\n".join(sections)


def stages_reference() -> str:
    from harness.stages import get_stage, stage_names

    return "\n".join(plugin_section(get_stage(name), "") for name in stage_names())


def rewards_reference() -> str:
    from harness.stages.rewards import REWARDS, reward_names

    return "\n".join(plugin_section(REWARDS.get(name), "") for name in reward_names())


# ----------------------------------------------------------------------------- commands


def commands_reference() -> str:
    """Every command of the `harness` CLI with its help and every argument and option, read from the
    Typer app itself (what `harness COMMAND --help` prints)."""
    import typer

    from harness.cli import app

    group = typer.main.get_command(app)
    sections = []
    for name, command in group.commands.items():
        rows = ["| argument or option | default | description |", "| --- | --- | --- |"]
        for param in command.params:
            if param.param_type_name == "argument":
                shown = param.name.upper()
                default = "required"
            else:
                shown = ", ".join(param.opts + param.secondary_opts)
                default = "–" if param.default is None else code(repr(param.default))
                default = "required" if param.required else default
            rows.append(f"| {code(shown)} | {default} | {cell(getattr(param, 'help', None) or '')} |")
        about = " ".join((command.help or "").split())
        table = "\n".join(rows) + "\n" if command.params else "No arguments.\n"
        sections.append(f"### `harness {name}`\n\n{cell(about)}\n\n{table}")
    return "\n".join(sections)


REFERENCES = {
    "experiment": experiment_reference,
    "golden_set": golden_set_reference,
    "methods": methods_reference,
    "stages": stages_reference,
    "rewards": rewards_reference,
    "commands": commands_reference,
}
