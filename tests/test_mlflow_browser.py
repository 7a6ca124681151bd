"""The MLflow UI as a person meets it: a tracked tiny run, the REAL `harness ui` server, and the
links it prints opened in headless Chromium (Debian's, driven by Playwright). The page a user
lands on must show the arms with their accuracy and method, not the GenAI overview. Set
HARNESS_SCREENSHOT_DIR=folder to keep the screenshots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from harness.tracking.mlflow_tracker import import_mlflow
from harness.tracking.ui import link_lines, start_ui, stop_ui
from harness.tracking.views import VIEW_TAG
from tests.conftest import experiment_dict, run_in
from tests.test_report_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_tracking import free_port

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM}")]


@pytest.fixture(scope="module")
def tracked(tiny_models, tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    data = experiment_dict(
        tiny_models,
        tiny_data,
        [{"method": "full_ft", "model": "bert", "lr": 1e-3}, {"method": "zero_shot", "model": "llama"}],
    )
    data["tracking"] = {"uri": store}
    (folder / "e.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    run = run_in(folder, folder / "e.yaml")
    return store, run


def test_the_experiment_is_tagged_and_the_view_is_stored(tracked):
    store, run = tracked
    client = import_mlflow().MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.tags["mlflow.experimentKind"] == "finetuning"
    import json

    state = json.loads(experiment.tags[VIEW_TAG])
    assert state["orderByKey"] == "metrics.`accuracy`" and state["orderByAsc"] is False
    assert {"metrics.`accuracy`", "params.`method`", "params.`model_key`"} <= set(state["selectedColumns"])
    children = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("arm.hash")]
    notes = {r.info.run_name: r.data.tags["mlflow.note.content"] for r in children}
    arm = next(a for a in run.arms if a["arm"]["name"] == "full_ft · bert")
    assert notes["full_ft · bert"].startswith(
        f"full_ft on bert (sentiment): accuracy {arm['metrics']['accuracy']:.3f} ["
    )


@pytest.mark.timeout(900)  # the safety net: every wait below is for an event (/health, a row shown)
def test_the_printed_link_lands_on_the_arms_with_their_accuracy(tracked, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    store, run = tracked
    proc, url = start_ui(store, port=free_port(), timeout_s=None)
    try:
        lines = link_lines(store, url)
        runs_link = next(line.split(" runs ", 1)[1] for line in lines if " runs " in line)
        compare_link = next(line.rsplit(" ", 1)[1] for line in lines if "compare the arms" in line)
        assert runs_link.startswith(url + "/#/experiments/") and "workflowType=machine_learning" in runs_link
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(0)  # no clock: wait for the page and its rows as long as they take
                page.set_default_navigation_timeout(0)
                page.goto(runs_link)
                table = page.get_by_role("grid").first  # the runs table (ag-grid)
                for arm in run.arms:
                    table.get_by_text(arm["arm"]["name"], exact=True).wait_for()
                headers = page.get_by_role("columnheader").all_inner_texts()
                assert any(h.strip().startswith("accuracy") for h in headers), headers
                assert any(h.strip() == "method" for h in headers), headers
                text = table.inner_text()
                for arm in run.arms:
                    assert arm["arm"]["method"] in text
                assert "Traces" not in page.locator("h2, [role=heading]").all_inner_texts()
                assert "Token Usage" not in page.content()  # not the GenAI overview
                shots = Path(os.environ.get("HARNESS_SCREENSHOT_DIR") or tmp_path)
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / "mlflow-runs.png"))
                page.goto(compare_link)
                for arm in run.arms:
                    page.get_by_text(arm["arm"]["name"]).first.wait_for()
                page.screenshot(path=str(shots / "mlflow-compare.png"))
            finally:
                browser.close()
    finally:
        stop_ui(proc)
    assert (shots / "mlflow-runs.png").stat().st_size > 10_000
    if os.environ.get("HARNESS_SCREENSHOT_DIR") is None:
        shutil.rmtree(shots, ignore_errors=True)
