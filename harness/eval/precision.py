"""The precision arms are evaluated in (`budget.eval_precision`): fp32, bf16, or auto.

auto is decided by measurement, per device kind (bench/eval_precision.py; docs/performance.md has
the table). On a CPU, bf16 must be at least 1.3x faster than fp32 AND leave at least 99% of the
predictions unchanged: measured on a Xeon with AVX512-BF16 and AMX (2026-12-05), bf16 was 2.3x
faster at label scoring and 2.5x at generation, but changed 1 of 64 label predictions and 5 of 64
generations, so auto is fp32 on every CPU. Without those instructions a CPU emulates bf16, which is
slower still. On a CUDA GPU that supports it auto is bf16 (the usual practice; not measured here:
no GPU was lent). `eval_precision: bf16` is always honoured; on a CPU the arm's provenance says
whether bf16 ran natively or emulated. The plan resolves auto once, in the parent, so an arm's
budget (and hash) names the precision it really ran in.

Only the evaluation casts: training keeps its own precision (budget.precision, issue 13). A
4-bit base (QLoRA) keeps its quantised weights; bf16 then applies to its compute dtype only.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from harness.errors import HarnessError

CHOICES = ("auto", "fp32", "bf16")


CPU_BF16_OVERRIDE = "HARNESS_CPU_BF16"  # "1" or "0": answer for the CPU (tests drive both branches)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in the CPU flags (Linux); False where they cannot be read.
    `HARNESS_CPU_BF16=1|0` answers instead of the flags: a machine without the instructions can
    take the native-bf16 branch (to test it), and one with them can take the fp32 branch."""
    forced = os.environ.get(CPU_BF16_OVERRIDE, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise HarnessError(f"{CPU_BF16_OVERRIDE}={forced!r}: the value must be 0 or 1; fix: unset it or set 0 or 1")
    return _cpu_flags_have_bf16()


@lru_cache(maxsize=1)  # the plan asks once per arm; the CPU does not change
def _cpu_flags_have_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


# What auto means on a CPU, by the rule above: (native bf16?) -> precision. Both fp32 as measured;
# a later measurement that passes the rule changes the True entry, and with it the plan.
CPU_AUTO = {True: "fp32", False: "fp32"}


def resolve(choice: str) -> str:
    """'fp32' or 'bf16' for this machine."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return CPU_AUTO[cpu_has_native_bf16()]


def how_bf16_runs() -> str | None:
    """For an arm evaluated in bf16 on a CPU: 'native' (AVX512-BF16/AMX) or 'emulated' (slower
    than fp32); None on a GPU."""
    if torch.cuda.is_available():
        return None
    return "native" if cpu_has_native_bf16() else "emulated"


def for_evaluation(model, precision: str):
    """The model, cast for evaluation: bf16 casts floating-point weights in place (the trained
    arm is saved before, in its training precision); fp32 leaves it as it is."""
    if precision != "bf16":
        return model
    if _quantized(model):
        return model  # 4-bit/8-bit weights stay packed; their compute dtype is the loader's business
    return model.to(torch.bfloat16)


def _quantized(model) -> bool:
    return bool(
        getattr(model, "is_loaded_in_4bit", False)
        or getattr(model, "is_loaded_in_8bit", False)
        or getattr(getattr(model, "base_model", None), "is_loaded_in_4bit", False)
    )
