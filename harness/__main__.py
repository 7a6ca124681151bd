"""`python -m harness ...` is the same as the `harness` command."""

from harness.cli.main import app

app(prog_name="harness")
