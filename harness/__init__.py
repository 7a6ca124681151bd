"""harness: compare fine-tuning methods under one budget, evaluated one way."""

__version__ = "0.1.0"
