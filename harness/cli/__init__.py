"""The `harness` command (main: run, validate, plan, methods, stages, report, prepare, ui, gate)."""

from harness.cli.main import app

__all__ = ["app"]
