"""How an arm's process is started: the one command line and environment every executor uses.

`arm.devices` (harness.planning.plan.Arm) says how many devices the arm needs. One device: a
plain `python -m harness.execution.arm_process ARM_JSON OUT_DIR`. k devices: the same entry point
under torchrun, one process per device, on a free local port (--standalone), so several such arms
may run side by side. An executor that places arms (a local pool, Ray) gives the arm its k
devices (CUDA_VISIBLE_DEVICES) and runs this command unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENTRY_POINT = "harness.execution.arm_process"


def arm_command(arm, arm_json: Path, out_dir: Path) -> list[str]:
    if arm.devices == 1:
        return [sys.executable, "-m", ENTRY_POINT, str(arm_json), str(out_dir)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={arm.devices}",
            "-m", ENTRY_POINT, str(arm_json), str(out_dir)]


def arm_environment(arm, base: dict | None = None) -> dict:
    """The environment of the arm's process(es). On a machine without CUDA a multi-device arm runs
    its ranks as CPU processes over gloo, which accelerate only does when told (ANCHORS); each
    rank then gets an equal share of the CPU threads instead of all of them each."""
    env = dict(os.environ if base is None else base)
    if arm.devices > 1 and not _cuda_available():
        env["ACCELERATE_USE_CPU"] = "1"
        if "HARNESS_THREADS" not in env:
            env["HARNESS_THREADS"] = str(max(1, (os.cpu_count() or 1) // arm.devices))
    return env


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
