"""harness: compare fine-tuning methods under one budget, evaluated one way.

The Python API (harness/api.py) is re-exported here: harness.run(...), harness.load_run(...),
harness.load_runs(...), Run, Runs. It is loaded on first use, not on `import harness`: every
module of the package (and every arm process) imports this file, and none of them should pay for
the API's imports. The version lives in harness.version, so that nothing below the API needs the
package root (tests/test_architecture.py places it at the top, beside the CLI).
"""

import importlib

from harness.version import __version__

API = ("Run", "Runs", "load_run", "load_runs", "run")
__all__ = [*API, "__version__"]


def __getattr__(name: str):
    if name in API:
        return getattr(importlib.import_module("harness.api"), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def _silence_known_noise() -> None:
    """Two messages every command printed that no user can act on (STACK_NOTES.md: harmless):
    bitsandbytes' optional CPU kernel download (offline by design) and transformers' rename of
    is_gradient_checkpointing, which it triggers itself. Only these exact messages; every other
    warning still shows."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")
    )
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


_silence_known_noise()
