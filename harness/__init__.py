"""harness: compare fine-tuning methods under one budget, evaluated one way."""

__version__ = "0.1.0"


def _silence_known_noise() -> None:
    """Two messages every command printed that no user can act on (STACK_NOTES.md: harmless):
    bitsandbytes' optional CPU kernel download (offline by design) and transformers' rename of
    is_gradient_checkpointing, which it triggers itself. Only these exact messages; every other
    warning still shows."""
    import logging
    import warnings

    logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
        lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community"))
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


_silence_known_noise()
