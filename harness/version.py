"""The harness version, in a module of its own: what records it (tracking, provenance) reads it
here instead of from the package root, which re-exports the Python API (the top layer)."""

__version__ = "0.1.0"
