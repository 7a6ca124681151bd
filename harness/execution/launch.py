"""Starting one arm process and what an executor reports back to the runner.

Both executors run the same unit, `python -m harness.execution.arm_process ARM_JSON OUT_DIR`, with
this function: the local pool on this machine, the Ray executor inside a Ray task on a worker.
An arm that needs k devices (`Arm.devices`) runs the same entry point under torchrun, one process
per device, on a free local port (--standalone), so several such arms may run side by side; the
executor gives it its k devices (CUDA_VISIBLE_DEVICES). An arm over m nodes (Ray) runs one torchrun
per node, which meet at the first node's address (`MultiNode`).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.execution.arm_common import EVENT_PREFIX

ENTRY_POINT = "harness.execution.arm_process"


@dataclass(frozen=True)
class MultiNode:
    """This node's part of an arm over `nodes` nodes: torchrun's node rank and the rendezvous
    (host:port of node rank 0, which hosts torch's store; a static rendezvous, so node ranks and
    therefore global rank 0 are fixed)."""

    nodes: int
    node_rank: int
    endpoint: str

    def torchrun_args(self) -> list[str]:
        return [
            f"--nnodes={self.nodes}",
            f"--node-rank={self.node_rank}",
            "--rdzv-backend=static",
            f"--rdzv-endpoint={self.endpoint}",
        ]


def arm_command(devices: int, arm_json: Path, out_dir: Path, multi_node: MultiNode | None = None) -> list[str]:
    if devices <= 1 and multi_node is None:
        return [sys.executable, "-m", ENTRY_POINT, str(arm_json), str(out_dir)]
    where = multi_node.torchrun_args() if multi_node else ["--standalone"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        f"--nproc_per_node={devices}",
        "-m",
        ENTRY_POINT,
        str(arm_json),
        str(out_dir),
    ]


def distributed_environment(devices: int, env: dict[str, str], multi_node: bool = False) -> dict[str, str]:
    """On a machine without CUDA a multi-device arm runs its ranks as CPU processes over gloo, which
    accelerate only does when told (ANCHORS); each rank then gets an equal share of the threads."""
    if (devices > 1 or multi_node) and not _cuda_available():
        env = {**env, "ACCELERATE_USE_CPU": "1"}
        threads = int(env.get("HARNESS_THREADS") or os.cpu_count() or 1)
        env["HARNESS_THREADS"] = str(max(1, threads // devices))
    return env


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class Started:
    arm: object
    where: str  # "cuda 1", "cpu, 1 thread", "node 3f2a gpu 0": shown beside the arm


@dataclass
class Event:
    arm: object
    event: dict  # a progress event the arm printed (harness.execution.arm_common.emit)


@dataclass
class Finished:
    arm: object
    returncode: int | None  # the arm process's exit status; None: it never ran to an end
    started_at: str
    error: str | None = None  # why there is no exit status (a Ray task error, a dead node)
    extra: dict = field(default_factory=dict)


try:  # loaded at import, not in the child: between fork and exec the child only makes the one call
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None

OWNER_ENV = "HARNESS_ARM_OWNER"  # pid of the process that started the arm: the one its result is for
STOP_GRACE_S = 10


def die_with_parent() -> None:
    """The kernel kills this process when the one that started it dies (a Ray worker killed by
    SIGKILL, a lost node, a runner killed by the OOM killer): run before exec in the arm process,
    and again by every torchrun rank, so no orphan keeps a device busy or writes into a dead run."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def owner_alive() -> bool:
    """Whether the process that started this arm is still there (True when it did not say who it is)."""
    owner = os.environ.get(OWNER_ENV, "")
    if not owner.isdigit():
        return True
    try:
        os.kill(int(owner), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def arm_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment with `overrides`, naming this process as the arm's driver: the
    root of the process tree whose CPU time is the harness's own (harness.eval.machine_load)."""
    env = dict(os.environ)
    env["HARNESS_DRIVER_PID"] = str(os.getpid())
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def run_arm_process(
    arm_json: Path,
    out_dir: Path,
    *,
    env: dict[str, str],
    on_event: Callable[[dict], None],
    on_start: Callable[[subprocess.Popen], None] | None = None,
    devices: int = 1,
    multi_node: MultiNode | None = None,
) -> int:
    """Run the arm to its end; its stderr (and any stray stdout) goes to OUT_DIR/log.txt. Returns the
    exit status (negative: killed by that signal)."""
    with open(Path(out_dir) / "log.txt", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            arm_command(devices, arm_json, out_dir, multi_node),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            env=distributed_environment(devices, {**env, OWNER_ENV: str(os.getpid())}, multi_node is not None),
            preexec_fn=die_with_parent,
        )
        if on_start:
            on_start(proc)
        for line in proc.stdout:
            if line.startswith(EVENT_PREFIX):
                on_event(json.loads(line[len(EVENT_PREFIX) :]))
            else:
                log.write(line)
        return proc.wait()


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a running arm: SIGTERM (torchrun passes it to its ranks and waits for them), then
    SIGKILL after grace_s (its ranks then die with it: die_with_parent)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
