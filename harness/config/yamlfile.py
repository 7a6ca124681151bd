"""Reading YAML with line numbers: parse a mapping, apply --set overrides, and turn a pydantic
error into one sentence naming the file, the line, the key path and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from harness.config.schema import ArmSpec, Experiment
from harness.errors import HarnessError, did_you_mean

# Bounds of every YAML file harness reads (experiments, golden sets, --set values). A file within
# them parses in well under a second; one outside them (an alias bomb, 10,000 nested brackets, a
# log file passed by mistake) is refused with one sentence instead of eating memory or the stack.
MAX_YAML_BYTES = 4 << 20  # 4 MiB: a golden set of a few thousand paragraphs fits
MAX_YAML_DEPTH = 64  # nesting of mappings/lists; real files stay under 10
MAX_YAML_NODES = 200_000  # values after expanding every alias (*ref) to its anchor (&ref)


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that harness will not read (too deep, too big once expanded, a duplicate key)."""

    def __init__(self, problem: str, mark, fix: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no tags that run code) that refuses deep nesting while composing, before
    Python's own recursion limit is reached."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(f"nests deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark, "flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose_yaml(text: str) -> yaml.Node | None:
    """The YAML node tree of one document, bounded (depth, expanded size) and without duplicate
    keys. Raises yaml.YAMLError with a mark, like PyYAML's own errors."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None:
        _check_expansion(node)
    return node


def load_yaml_text(text: str, *, file: str, what: str = "") -> Any:
    """Parse YAML text with the bounds above; any problem is one HarnessError naming file and line."""
    try:
        node = compose_yaml(text)
        if node is None:
            return None
        loader = _BoundedLoader("")
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, _Refused):
            raise HarnessError(
                f"{what}{problem}", file=file, line=mark.line + 1 if mark else None, fix=err.fix
            ) from None
        raise HarnessError(
            f"{what}is not valid YAML ({problem})",
            file=file,
            line=mark.line + 1 if mark else None,
            fix="fix the YAML syntax",
        ) from None
    except RecursionError:  # a structure the bounds above did not foresee: still one sentence
        raise HarnessError(f"{what}is nested too deeply to read", file=file, fix="flatten it") from None


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root) -> None:
    """Count the values the document becomes once every alias is expanded (an alias is the same
    node object as its anchor, so a 9 x 9 "billion laughs" is a few dozen nodes standing for 10^9),
    refuse self-reference and duplicate keys. Iterative: aliases can chain deeper than the stack."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise _Refused(
                    f"its aliases expand to more than {MAX_YAML_NODES:,} values",
                    node.start_mark,
                    "write the values out, or use fewer nested aliases (*name)",
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise _Refused(
                "an alias refers to the value that contains it",
                node.start_mark,
                "an alias (*name) may only repeat a finished value",
            )
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(node)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _refuse_duplicate_keys(node: yaml.MappingNode) -> None:
    """PyYAML lets the last of two equal keys win silently; a duplicate is almost always a mistake."""
    seen: set[str] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                raise _Refused(
                    f"key '{key.value}' appears twice in one mapping",
                    key.start_mark,
                    "keep one of them (YAML would silently keep the last)",
                )
            seen.add(key.value)


def read_text_file(path: str | Path, *, what: str, max_bytes: int = MAX_YAML_BYTES) -> str:
    """A user's text file as str, or one HarnessError: missing, unreadable, too big, not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{what} not found: {path}", fix="check the path")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise HarnessError(
                f"is {size:,} bytes, more than the {max_bytes:,} harness reads",
                file=str(path),
                fix="check that this is the right file",
            )
        data = path.read_bytes()
    except OSError as err:
        raise HarnessError(f"cannot be read ({err.strerror})", file=str(path), fix="check its permissions") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise HarnessError(
            f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})",
            file=str(path),
            line=line,
            fix="save it as UTF-8",
        ) from None


def read_yaml_mapping(path: str | Path, *, what: str, keys: str) -> tuple[dict, str]:
    """(parsed mapping, its text) of a YAML file, or one HarnessError naming the file and line."""
    path = Path(path)
    text = read_text_file(path, what=what)
    raw = load_yaml_text(text, file=str(path))
    if not isinstance(raw, dict):
        raise HarnessError(f"must be a mapping with {keys}", file=str(path))
    return raw, text


def apply_override(raw: dict, item: str, *, file: str) -> None:
    """--set budget.max_steps=10, --set arms.0.lr=1e-4: the value is parsed as YAML (bounded, like files)."""
    if "=" not in item:
        raise HarnessError(f"--set {item!r} has no '='", fix="write --set key.path=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise HarnessError(
            f"--set {key!r} is not a key path", fix="write --set key.path=value, e.g. budget.max_steps=10"
        )
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise HarnessError(
                    f"--set {key}: '{part}' is not an index of a {len(node)}-item list",
                    file=file,
                    fix="use a number from 0",
                )
            part = int(part)
        elif not isinstance(node, dict):
            raise HarnessError(f"--set {key}: '{'.'.join(parts[:i])}' is not a mapping", file=file)
        if last:
            try:
                node[part] = load_yaml_text(value, file=f"--set {key}", what="the value ")
            except HarnessError as err:  # a one-line value: no line number
                raise HarnessError(err.bare, file=f"--set {key}", fix=err.fix) from None
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]


def schema_error(
    err: ValidationError,
    text: str | KeyLines,
    file: str,
    root: type[BaseModel] | None = None,
    prefix: tuple = (),
    fix: str = "see the YAML format in README.md",
) -> HarnessError:
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
        return HarnessError("is required but missing", file=file, line=line, key=key, fix=f"add `{loc[-1]}:`")
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    got_text = f" (got {got!r})" if got is not None and not isinstance(got, (dict, list)) else ""
    return HarnessError(f"{message}{got_text}", file=file, line=line, key=key or None, fix=fix)


def _is_validator_step(part) -> bool:
    """pydantic puts validator and union-member names into `loc` ("function-after[...]", "int",
    "list[str]"); they are not keys of the file."""
    return isinstance(part, str) and (
        part.startswith(("function-", "literal[", "list[", "dict["))
        or part in ("int", "float", "str", "bool", "constrained-float")
    )


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
            self.root = compose_yaml(text)
        except (yaml.YAMLError, RecursionError):
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
