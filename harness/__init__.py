"""harness: compare fine-tuning methods under one budget, evaluated one way."""

__version__ = "0.1.0"

# The Python API (harness/api.py): harness.run(...), harness.load_run(...), harness.load_runs(...).
from harness.api import Run, Runs, load_run, load_runs, run  # noqa: E402

__all__ = ["Run", "Runs", "load_run", "load_runs", "run", "__version__"]
