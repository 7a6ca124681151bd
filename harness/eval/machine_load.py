"""How busy the machine was while a cost metric was measured.

A latency or throughput figure from a machine that other processes were using says little
about the method. `LoadWindow` records, around a measurement, the CPU time the machine spent in
all (from the kernel's counters) and the CPU time the harness's own process tree spent: the
driver (`harness run`, named to its arms by $HARNESS_DRIVER_PID) and every process under it (the
arm, its torchrun ranks, arms running beside it that split the cores by design), reaped children
included. The difference is what processes OUTSIDE the harness used: a measurement is `contended`
when they kept at least half a core busy on average. The load average is recorded but decides
nothing: it counts the arm's own threads (an arm at 2 threads on an idle 2-CPU machine shows a
load of about 2).

`CpuClock` is where the two figures come from (psutil here; a test can pass its own).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

OTHERS_CORES_CONTENDED = 0.5
DRIVER_ENV = "HARNESS_DRIVER_PID"


class CpuClock(Protocol):
    def machine_seconds(self) -> float | None:
        """CPU seconds every process on the machine has spent (None where unknown)."""

    def tree_seconds(self, root: int) -> float:
        """CPU seconds `root` and all its descendants have spent, reaped children included."""


class PsutilClock:
    def machine_seconds(self) -> float | None:
        import psutil

        times = psutil.cpu_times()
        busy = ("user", "nice", "system", "irq", "softirq", "steal")
        return float(sum(getattr(times, name, 0.0) for name in busy))

    def tree_seconds(self, root: int) -> float:
        import psutil

        try:
            top = psutil.Process(root)
            members = [top, *top.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0.0
        for process in members:
            try:
                t = process.cpu_times()
            except psutil.Error:  # ended between the listing and the reading
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total


def harness_root() -> int:
    """The pid whose process tree is the harness's own: the driver that started this arm when it
    is an ancestor of this process, else this process."""
    import psutil

    named = os.environ.get(DRIVER_ENV, "")
    if named.isdigit():
        try:
            if int(named) in {p.pid for p in psutil.Process().parents()}:
                return int(named)
        except psutil.Error:
            pass
    return os.getpid()


class LoadWindow:
    """with LoadWindow() as w: ...measure...; then w.conditions()."""

    def __init__(self, clock: CpuClock | None = None, root: int | None = None):
        self.clock = clock or PsutilClock()
        self.root = root
        self.others = self.own = None

    def __enter__(self):
        if self.root is None:
            self.root = harness_root()
        self.wall = time.perf_counter()
        self._machine, self._tree = self.clock.machine_seconds(), self.clock.tree_seconds(self.root)
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        machine, tree = self.clock.machine_seconds(), self.clock.tree_seconds(self.root)
        self.own = max(tree - self._tree, 0.0)
        if machine is not None and self._machine is not None:
            self.others = max(machine - self._machine - self.own, 0.0)
        return False

    def conditions(self) -> dict:
        cores = os.cpu_count() or 1
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        per_second = self.wall if self.wall > 0 else None
        others_cores = round(self.others / per_second, 3) if self.others is not None and per_second else None
        own_cores = round(self.own / per_second, 3) if self.own is not None and per_second else None
        return {
            "load_avg_1m": round(load, 2) if load is not None else None,
            "cpu_count": cores,
            "other_cpu_seconds": round(self.others, 3) if self.others is not None else None,
            "other_cores_in_use": others_cores,
            "own_cores_in_use": own_cores,
            "seconds": round(self.wall, 3),
            "contended": bool(others_cores is not None and others_cores >= OTHERS_CORES_CONTENDED),
            "contention_rule": f"other processes used >= {OTHERS_CORES_CONTENDED} core on average",
        }


def merge(*conditions: dict) -> dict:
    """One record for several windows (throughput pass, latency pass): contended if any was."""
    conditions = [c for c in conditions if c]
    if not conditions:
        return {}
    seconds = sum(c["seconds"] for c in conditions)
    others = [c["other_cpu_seconds"] for c in conditions if c["other_cpu_seconds"] is not None]
    loads = [c["load_avg_1m"] for c in conditions if c["load_avg_1m"] is not None]
    own = [c["own_cores_in_use"] * c["seconds"] for c in conditions if c.get("own_cores_in_use") is not None]
    return {
        "load_avg_1m": max(loads) if loads else None,
        "cpu_count": conditions[0]["cpu_count"],
        "other_cpu_seconds": round(sum(others), 3) if others else None,
        "other_cores_in_use": round(sum(others) / seconds, 3) if others and seconds else None,
        "own_cores_in_use": round(sum(own) / seconds, 3) if own and seconds else None,
        "seconds": round(seconds, 3),
        "contended": any(c["contended"] for c in conditions),
        "contention_rule": conditions[0].get("contention_rule"),
    }
