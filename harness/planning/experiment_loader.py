"""load_experiment(path) -> Experiment: read the YAML, apply --set overrides, validate the schema,
then check it against the world (harness.planning.validation)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from harness.config.schema import Experiment
from harness.config.yamlfile import KeyLines, apply_override, read_yaml_mapping, schema_error
from harness.planning.validation import check_experiment


def load_experiment(
    path: str | Path, overrides: list[str] | None = None, *, check: bool = True, check_sources: bool = True
) -> Experiment:
    """Read, override (--set), validate and check an experiment file. Raises HarnessError."""
    path = Path(path)
    raw, text = read_yaml_mapping(path, what="experiment file", keys="name, tasks, models, budget and arms")
    for item in overrides or []:
        apply_override(raw, item, file=str(path))
    try:
        experiment = Experiment.model_validate({**raw, "source_file": str(path)})
    except ValidationError as err:
        raise schema_error(err, text, str(path)) from None
    if check:
        check_experiment(experiment, lines=KeyLines(text), sources=check_sources)
    return experiment
