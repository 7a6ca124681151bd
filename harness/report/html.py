"""The HTML report: one self-contained page (inline CSS, inline SVG charts, a few lines of
inline JS for sorting and filtering; nothing fetched) written next to results.json.

Every string that a model, a dataset or the user wrote reaches the page through Jinja with
autoescaping on; the only markup built in Python is composed with markupsafe, which escapes
its arguments."""

from __future__ import annotations

import secrets
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from harness.errors import HarnessError
from harness.paths import atomic_write_text
from harness.report import view
from harness.results.arm_result import read_run_results


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("harness.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = view.format_value
    return env


def render(run_dir: Path, results: dict) -> str:
    # A fresh nonce per page: only the page's own script runs, even if something slipped past escaping.
    nonce = secrets.token_urlsafe(16)
    return _environment().get_template("report.html.j2").render(nonce=nonce, **view.build(run_dir, results))


def write_html_report(run_dir: Path) -> Path:
    """Read run_dir/results.json (and the arms' predictions) and write run_dir/index.html."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file():
        raise HarnessError(f"no results.json in {run_dir}", fix="pass a reports/<experiment>/<run-id> folder")
    results = read_run_results(run_dir, needs=("name", "task_key"))
    out = run_dir / "index.html"
    atomic_write_text(out, render(run_dir, results))
    return out
