"""Reading YAML with line numbers: parse a mapping, apply --set overrides, and turn a pydantic
error into one sentence naming the file, the line, the key path and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from harness.config.schema import ArmSpec, Experiment
from harness.errors import HarnessError, did_you_mean

def read_yaml_mapping(path: str | Path, *, what: str, keys: str) -> tuple[dict, str]:
    """(parsed mapping, its text) of a YAML file, or one HarnessError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{what} not found: {path}", fix="check the path")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise HarnessError(f"is not valid YAML ({getattr(err, 'problem', err)})", file=str(path),
                           line=mark.line + 1 if mark else None, fix="fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"must be a mapping with {keys}", file=str(path))
    return raw, text


def apply_override(raw: dict, item: str, *, file: str) -> None:
    """--set budget.max_steps=10, --set arms.0.lr=1e-4: the value is parsed as YAML."""
    if "=" not in item:
        raise HarnessError(f"--set {item!r} has no '='", fix="write --set key.path=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise HarnessError(f"--set {key}: '{part}' is not an index of a {len(node)}-item list",
                                   file=file, fix="use a number from 0")
            part = int(part)
        elif not isinstance(node, dict):
            raise HarnessError(f"--set {key}: '{'.'.join(parts[:i])}' is not a mapping", file=file)
        if last:
            node[part] = yaml.safe_load(value)
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]


def schema_error(err: ValidationError, text: str | KeyLines, file: str, root: type[BaseModel] | None = None,
                 prefix: tuple = (), fix: str = "see the YAML format in README.md") -> HarnessError:
    """The first pydantic error as one sentence with line, key path and fix. `root` is the
    schema that was validated (Experiment unless said), for did-you-mean on unknown keys;
    `prefix` is where that schema sits in the file (a plugin's params: ("arms", 2, "params"))."""
    first = err.errors()[0]
    inner = [p for p in first["loc"] if not _is_validator_step(p)]
    loc = [*prefix, *inner]
    key = dotted(loc)
    line = (text if isinstance(text, KeyLines) else KeyLines(text)).line(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = inner[:-1]
        allowed = _allowed_keys(parent, root or Experiment)
        fix = ("remove it, or " + did_you_mean(str(loc[-1]), allowed)) if allowed else "remove it"
        return HarnessError(f"unknown key '{loc[-1]}'", file=file, line=line, key=key, fix=fix)
    if kind == "missing":
        return HarnessError("is required but missing", file=file, line=line, key=key,
                            fix=f"add `{loc[-1]}:`")
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    got_text = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list)) else ""
    return HarnessError(f"{message}{got_text}", file=file, line=line, key=key or None, fix=fix)


def _is_validator_step(part) -> bool:
    """pydantic puts validator and union-member names into `loc` ("function-after[...]", "int",
    "list[str]"); they are not keys of the file."""
    return isinstance(part, str) and (part.startswith(("function-", "literal[", "list[", "dict[")) or
                                      part in ("int", "float", "str", "bool", "constrained-float"))


def dotted(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(parent_loc, root: Any = None) -> list[str]:
    """Field names of the schema model found at a location, for did-you-mean on unknown keys."""
    model: Any = root or Experiment
    for part in parent_loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            # inside a dict[str, Model]: the key is a user name, the model is the value type
            continue
        model = _model_of(field.annotation)
    fields = getattr(model, "model_fields", {})
    return [name for name in fields if name != "source_file"] + (["model", "task"] if model is ArmSpec else [])


def _model_of(annotation):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


class KeyLines:
    """Maps a key path (('arms', 2, 'method')) to its line in the YAML text, via yaml.compose."""

    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def line(self, loc) -> int | None:
        node, best = self.root, None
        for part in loc:
            if node is None:
                break
            best = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if k.value == str(part)]
                if not match:
                    return best
                best = match[0][0].start_mark.line + 1
                node = match[0][1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                best = node.start_mark.line + 1
            else:
                return best
        return best
