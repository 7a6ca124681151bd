"""The report as a person sees it: a tiny experiment run through `harness run`, its index.html
opened in headless Chromium (the Debian package, driven by Playwright without downloading a
browser). Set HARNESS_SCREENSHOT=path to keep a screenshot of the page."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli.main import app
from tests.conftest import sentiment_rows

CHROMIUM = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = "<script>alert(1)</script>"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"Chromium not found at {CHROMIUM}: install the Debian packages "
    "`chromium chromium-driver` (setup.sh does, as root)",
)


def xss_test_split(folder: Path) -> Path:
    rows = sentiment_rows(8, seed=2)
    rows[0]["review"] = f"{XSS} the film was great"
    path = folder / "test_with_xss.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_tiny_experiment(write_experiment, tmp_path: Path) -> Path:
    test_split = xss_test_split(tmp_path)

    def use_xss_split(data):
        data["tasks"]["sentiment"]["data"]["test"] = str(test_split)

    path = write_experiment(
        [
            {"method": "full_ft", "model": "bert", "lr": 1e-3},
            {"method": "zero_shot", "model": "llama"},
            {"method": "lora", "model": "llama", "params": {"target_modules": ["no_such_module"]}},  # fails fast
        ],
        edit=use_xss_split,
    )
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(app, ["run", str(path)], env={"COLUMNS": "250"})
    finally:
        os.chdir(old)
    assert result.exit_code == 1, result.output  # one arm failed on purpose; the report is still written
    run_dir = next(p for p in (tmp_path / "reports" / "tiny").iterdir() if p.name != "latest")
    assert f"report: {(run_dir / 'index.html').relative_to(tmp_path)}" in result.output
    return run_dir


def test_report_renders_in_a_browser(write_experiment, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    run_dir = run_tiny_experiment(write_experiment, tmp_path)
    arm_names = [a["arm"]["name"] for a in json.loads((run_dir / "results.json").read_text())["arms"]]

    problems, dialogs = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            requests = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((run_dir / "index.html").as_uri())

            # The table has a column for every arm, the failed one with its error.
            assert (
                page.locator("table.comparison thead th.arm").all_inner_texts()
                and [t.splitlines()[0] for t in page.locator("table.comparison thead th.arm").all_inner_texts()]
                == arm_names
            )
            # the failed arm's error (collapsed arms carry a flag in the same style)
            assert "no_such_module" in " ".join(page.locator("table.comparison .error").all_inner_texts())
            # the tiny arms predict one label (flagged collapsed), so the answer says no arm ranks
            answer = page.locator("#answer").inner_text()
            assert answer.startswith(("On sentiment", "No arm on sentiment trained soundly")), answer

            # The pairwise tests of the primary metric are on the page, visible: ranked arms, the
            # differences with interval, p, adjusted p and test.
            section = page.locator("div.pairwise").first
            assert section.is_visible() and "Pairwise tests on accuracy" in section.inner_text()
            assert page.locator("table.ranking tbody tr").count() >= 1
            difference = page.locator("table.differences tbody tr").first
            assert difference.is_visible() and "McNemar exact" in difference.inner_text()

            # The charts have drawn: points, curves and bars with a real size on screen.
            points = page.locator("svg.pareto circle.point")
            assert points.count() == 3 * 2  # three Pareto charts, two completed arms each
            assert page.locator("svg.pareto circle.point.front").count() >= 3
            assert points.first.bounding_box()["width"] > 4
            assert page.locator("svg.curves polyline.curve").count() == 1  # only full_ft trained
            assert page.locator("svg.bars rect.bar").count() >= 2
            bars = page.locator("svg.bars rect.bar")
            assert max(bars.nth(i).bounding_box()["height"] for i in range(bars.count())) > 20

            # The dataset's <script> is shown as text, and nothing ran.
            cell = page.locator("table.examples td.text", has_text=XSS)
            assert cell.count() == 1 and XSS in cell.inner_text()
            assert page.evaluate("document.querySelectorAll('script').length") == 1  # the page's own

            # The filter a person would click: only the items where the two arms disagree remain.
            rows = page.locator("table.examples tbody tr")
            disagree = page.locator("table.examples tbody tr.disagree").count()
            page.get_by_label("only where arms disagree").check()
            visible = [rows.nth(i).is_visible() for i in range(rows.count())]
            assert sum(visible) == disagree
            assert all(rows.nth(i).get_attribute("data-disagree") == "0" for i, v in enumerate(visible) if not v)

            page.get_by_label("only where arms disagree").uncheck()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("HARNESS_SCREENSHOT"):
                target = Path(os.environ["HARNESS_SCREENSHOT"])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, target)
        finally:
            browser.close()

    assert dialogs == [], f"a dialog fired: {dialogs}"
    assert problems == [], f"console errors: {problems}"
    assert all(url.startswith("file:") for url in requests), f"the page fetched: {requests}"
    assert shot.stat().st_size > 10_000


def test_a_nine_arm_report_fits_1280_px_and_shows_the_tied_group(tmp_path):
    """A hand-made run of nine arms (no training): no arm column is off-screen at 1280 px, and the
    ranked arms, every difference with its interval and adjusted p, and the tied-for-first group
    are present and visible."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    from tests.test_report_html import _pair, arm, make_run

    arms = [arm(f"method{i}-model{i}", 0.83 - i / 50, 5.0 + i, ci={"accuracy": [0.7 - i / 50, 0.9]}) for i in range(9)]
    names = [a["arm"]["name"] for a in arms]
    comparisons = [
        {
            **_pair(names[i], names[j], (j - i) / 50, 0.3 if j < 2 else 1e-3, 0.6 if j < 2 else 0.01, j >= 2),
            "family_size": 36,
        }
        for i in range(9)
        for j in range(i + 1, 9)
    ]
    run_dir = make_run(tmp_path, arms, comparisons=comparisons, correction="holm")
    result = CliRunner().invoke(app, ["report", str(run_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((run_dir / "index.html").as_uri())
            headers = page.locator("table.comparison thead th.arm")
            assert [t.splitlines()[0] for t in headers.all_inner_texts()] == names
            for i in range(headers.count()):
                box = headers.nth(i).bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, (names[i], box)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280
            tied = page.locator("div.pairwise p.tied")
            assert tied.is_visible() and tied.inner_text().startswith(
                f"Statistically tied for first: {names[0]}, {names[1]}"
            )
            assert page.locator("table.ranking tbody tr").count() == 9
            assert page.locator("table.ranking tr.tied").count() == 2
            rows = page.locator("table.differences tbody tr")
            assert rows.count() == 36 and rows.first.is_visible()
            assert "[" in rows.first.inner_text() and "McNemar exact" in rows.first.inner_text()
            for cell in page.locator("table.differences thead th").all():
                box = cell.bounding_box()
                assert box["x"] + box["width"] <= 1280
            shot = tmp_path / "nine.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("HARNESS_SCREENSHOT"):
                target = Path(os.environ["HARNESS_SCREENSHOT"]).with_name("nine_arms.png")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, target)
        finally:
            browser.close()
