"""A gate verdict for people and machines: console lines, a Markdown PR comment, JUnit XML for CI,
and an MLflow run carrying the verdict."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET


def console_lines(verdict: dict) -> list[str]:
    mark = "PASS" if verdict["passed"] else "REGRESSION"
    lines = [
        f"gate {verdict['set']}@{verdict['version']}: {mark} — candidate {verdict['candidate_passed']}/"
        f"{verdict['total']} ({verdict['candidate_pass_rate']:.1%}) vs baseline {verdict['baseline_passed']}/"
        f"{verdict['total']} ({verdict['baseline_pass_rate']:.1%}); flips pass->fail "
        f"{len(verdict['pass_to_fail'])}, fail->pass {len(verdict['fail_to_pass'])} "
        f"(McNemar p = {verdict['p_value']:.3g})"
    ]
    lines += [f"  - {reason}" for reason in verdict["reasons"]]
    for item in verdict["items"]:
        if item["baseline_passed"] and not item["passed"]:
            lines.append(
                f"  passed before, fails now: {item['id']}{' (must)' if item['must'] else ''}: "
                f"{'; '.join(item['failures'])}"
            )
    if verdict.get("same_source"):
        lines.append("  note: candidate and baseline are the same source")
    return lines


def _md(text) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")[:300]


def to_markdown(verdict: dict) -> str:
    head = "✅ **passed**" if verdict["passed"] else "❌ **regression**"
    out = [
        f"### Golden gate `{verdict['set']}@{verdict['version']}`: {head}",
        "",
        "| | passed | pass rate |",
        "| --- | ---: | ---: |",
        f"| baseline | {verdict['baseline_passed']}/{verdict['total']} | {verdict['baseline_pass_rate']:.1%} |",
        f"| candidate | {verdict['candidate_passed']}/{verdict['total']} | {verdict['candidate_pass_rate']:.1%} |",
        "",
        f"Flips: {len(verdict['pass_to_fail'])} pass→fail, {len(verdict['fail_to_pass'])} fail→pass "
        f"(McNemar exact p = {verdict['p_value']:.3g}, alpha {verdict['alpha']}); "
        f"allowed drop {verdict['max_drop']:.1%}.",
        "",
    ]
    if verdict["reasons"]:
        out += ["**Why it failed**", ""] + [f"- {r}" for r in verdict["reasons"]] + [""]
    diff = [i for i in verdict["items"] if i["baseline_passed"] and not i["passed"]]
    if diff:
        out += ["**Passed before, fails now**", "", "| item | must | expected | actual |", "| --- | --- | --- | --- |"]
        out += [
            f"| `{_md(i['id'])}` | {'yes' if i['must'] else ''} | {_md(i['expected'])} | {_md(i['actual'])} |"
            for i in diff
        ] + [""]
    fixed = [i["id"] for i in verdict["items"] if i["passed"] and not i["baseline_passed"]]
    if fixed:
        out += [f"Fixed (failed before, passes now): {', '.join(f'`{_md(x)}`' for x in fixed)}", ""]
    return "\n".join(out)


def to_junit(verdict: dict) -> str:
    """JUnit XML: one testcase per golden item (failures carry expected and actual text), and a
    `verdict` testcase in its own suite that fails when the gate does."""
    root = ET.Element("testsuites", name="harness gate")
    items = verdict["items"]
    failed = [i for i in items if not i["passed"]]
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"golden.{verdict['set']}@{verdict['version']}",
        tests=str(len(items)),
        failures=str(len(failed)),
        errors="0",
        skipped="0",
        time=f"{sum((i.get('latency_ms') or 0) for i in items) / 1000:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for key in ("candidate", "baseline", "candidate_pass_rate", "baseline_pass_rate", "p_value"):
        ET.SubElement(props, "property", name=key, value=str(verdict[key]))
    for item in items:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"golden.{verdict['set']}",
            name=item["id"],
            time=f"{(item.get('latency_ms') or 0) / 1000:.3f}",
        )
        if not item["passed"]:
            before = "passed in the baseline" if item["baseline_passed"] else "also failed in the baseline"
            failure = ET.SubElement(
                case,
                "failure",
                type="must" if item["must"] else "assertion",
                message=f"{'; '.join(item['failures'])} ({before})",
            )
            failure.text = f"expected: {item['expected']}\nactual: {item['actual']}\n" + "\n".join(item["failures"])
    gate = ET.SubElement(
        root,
        "testsuite",
        name="harness.gate",
        tests="1",
        failures="0" if verdict["passed"] else "1",
        errors="0",
        skipped="0",
        time="0",
    )
    case = ET.SubElement(gate, "testcase", classname="harness.gate", name=f"{verdict['set']} verdict", time="0")
    if not verdict["passed"]:
        failure = ET.SubElement(case, "failure", type="regression", message="; ".join(verdict["reasons"]))
        failure.text = "\n".join(verdict["reasons"])
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def log_verdict_to_mlflow(verdict: dict, uri: str | None) -> str | None:
    """Best effort: one MLflow run with the verdict's figures and the verdict as an artifact.
    Returns the run id, or None; never raises, so tracking trouble cannot fail the gate."""
    previous = None
    try:
        import tempfile

        import mlflow

        previous = mlflow.get_tracking_uri()
        if uri:
            mlflow.set_tracking_uri(uri)  # process-wide in MLflow: restored below
        mlflow.set_experiment("harness-gate")
        with mlflow.start_run(run_name=f"gate {verdict['set']}@{verdict['version']}") as run:
            mlflow.set_tags(
                {
                    "harness.gate": "passed" if verdict["passed"] else "regression",
                    "golden_set": verdict["set"],
                    "golden_version": verdict["version"],
                }
            )
            mlflow.log_params(
                {
                    "candidate": verdict["candidate"][:500],
                    "baseline": verdict["baseline"][:500],
                    "max_drop": verdict["max_drop"],
                    "alpha": verdict["alpha"],
                }
            )
            mlflow.log_metrics(
                {
                    "candidate_pass_rate": verdict["candidate_pass_rate"],
                    "baseline_pass_rate": verdict["baseline_pass_rate"],
                    "p_value": verdict["p_value"],
                    "pass_to_fail": len(verdict["pass_to_fail"]),
                    "fail_to_pass": len(verdict["fail_to_pass"]),
                    "passed": float(verdict["passed"]),
                }
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "gate_verdict.json"
                path.write_text(json.dumps(verdict, indent=2, ensure_ascii=False))
                mlflow.log_artifact(str(path))
            return run.info.run_id
    except Exception:  # noqa: BLE001 - tracking is a convenience, the verdict stands without it
        return None
    finally:
        if previous is not None:
            import mlflow

            mlflow.set_tracking_uri(previous)
