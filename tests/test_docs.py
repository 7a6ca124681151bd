"""The documentation: a README a newcomer reads in minutes, and a site whose reference pages are
generated from the code (docs/gen_reference.py, an MkDocs hook), so they cannot drift from it.
CI builds the site itself (`mkdocs build --strict` in .ci/run); these tests check what the build
cannot: that the generated tables really come from the schema and the registries."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from harness.config.schema import Budget, Experiment
from harness.config.yamlfile import load_yaml_text

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300


def load_hook():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(markdown: str, title: str) -> str:
    """The text of one `### title` section of generated Markdown (they sit under a page's `##`)."""
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"no section '### {title}' in the generated reference"
    return match.group(1)


def table_keys(text: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", text, re.MULTILINE)


def test_readme_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to a page under docs/"


def test_the_yaml_reference_lists_every_budget_field_with_its_default():
    reference = load_hook().experiment_reference()
    budget = section(reference, "`budget`")
    assert table_keys(budget) == list(Budget.model_fields)  # every field, in the schema's order
    assert "| `max_steps` | `int` (`> 0, <= 1000000000`) | `50` |" in budget
    # nested blocks get their own sections, reached from the top level
    assert table_keys(section(reference, "`budget.alignment`"))[0] == "eval_pairs"
    assert table_keys(section(reference, "`budget.judge`"))[0] == "model"
    assert table_keys(section(reference, "top level")) == [
        name for name, field in Experiment.model_fields.items() if not field.exclude
    ]
    assert "source_file" not in reference  # set by the loader, not written by users


def test_the_reference_is_built_from_the_schema_it_is_given():
    hook = load_hook()

    class Inner(BaseModel):
        """What the inner block sets."""

        depth: int = Field(default=3, ge=1, description="how deep | not a column break")

    class Toy(BaseModel):
        speed: float = Field(default=0.5, gt=0, lt=1, description="a <b>bold</b> claim")
        inner: Inner = Field(default_factory=Inner)
        many: dict[str, Inner] = Field(default_factory=dict)

    text = hook.schema_reference(Toy, "")
    assert table_keys(section(text, "top level")) == ["speed", "inner", "many"]
    assert "| `speed` | `float` (`> 0, < 1`) | `0.5` | a &lt;b>bold&lt;/b> claim |" in text
    assert "how deep \\| not a column break" in section(text, "`inner`")
    assert "What the inner block sets." in text
    assert "### `many.<key>`" not in text  # Inner is described once, where it is first reached


def test_the_methods_and_stages_references_list_every_plugin_and_parameter():
    from harness.methods import get_method, method_names
    from harness.stages import get_stage, stage_names

    hook = load_hook()
    methods, stages = hook.methods_reference(), hook.stages_reference()
    for name in method_names():
        block = methods.split(f"### `{name}`\n", 1)[1].split("\n### ", 1)[0]
        assert table_keys(block) == list(get_method(name).Params.model_fields), name
    for name in stage_names():
        block = stages.split(f"### `{name}`\n", 1)[1].split("\n### ", 1)[0]
        assert table_keys(block) == list(get_stage(name).Params.model_fields), name


def test_every_marker_on_the_pages_is_known_and_an_unknown_one_fails_the_build():
    hook = load_hook()
    used = set()
    for page in (ROOT / "docs").glob("*.md"):
        used |= set(hook.MARKER.findall(page.read_text(encoding="utf-8")))
    assert used == set(hook.REFERENCES), "a reference nobody shows, or a page asking for one that does not exist"

    class Page:
        class file:
            src_path = "x.md"

    with pytest.raises(ValueError, match="unknown reference marker 'nope'"):
        hook.on_page_markdown("text\n<!-- harness-reference: nope -->\n", Page, None, None)
    expanded = hook.on_page_markdown("<!-- harness-reference: methods -->\n", Page, None, None)
    assert "### `lora`" in expanded and "harness-reference" not in expanded


def test_every_page_is_in_the_nav():
    config = load_yaml_text((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), file="mkdocs.yml")

    def pages(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    in_nav = set(pages(config["nav"]))
    on_disk = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert on_disk == in_nav, (
        f"add to mkdocs.yml's nav: {sorted(on_disk - in_nav)}; no such page: {sorted(in_nav - on_disk)}"
    )


def test_the_commands_reference_lists_every_command_and_option():
    import typer

    from harness.cli import app

    reference = load_hook().commands_reference()
    for name, command in typer.main.get_command(app).commands.items():
        block = reference.split(f"### `harness {name}`\n", 1)[1].split("\n### ", 1)[0]
        options = [p.name.upper() if p.param_type_name == "argument" else p.opts[0] for p in command.params]
        assert [key.split(",")[0] for key in table_keys(block)] == options, name
