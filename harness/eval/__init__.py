"""Evaluation: every arm is measured here, the same way."""
