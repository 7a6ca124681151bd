"""How busy the machine was while a cost metric was measured.

A latency or throughput figure from a machine that other processes were using says little
about the method. `LoadWindow` records, around a measurement: the 1-minute load average, the
CPU count, and the CPU time the *other* processes spent (all CPU time in /proc/stat minus this
process's own), as cores in use on average. The measurement is `contended` when the load
average is above the CPU count or other processes used at least half a core on average.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

OTHERS_CORES_CONTENDED = 0.5


def _system_busy_seconds() -> float | None:
    """CPU seconds all processes spent, from /proc/stat (None off Linux)."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return None
    fields = stat.read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in (fields + ["0"] * 8)[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class LoadWindow:
    """with LoadWindow() as w: ...measure...; then w.conditions()."""

    def __enter__(self):
        self.wall = time.perf_counter()
        self.busy, self.own = _system_busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        busy = _system_busy_seconds()
        self.others = (
            None if busy is None or self.busy is None else max(busy - self.busy - (_own_seconds() - self.own), 0.0)
        )
        return False

    def conditions(self) -> dict:
        cores = os.cpu_count() or 1
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        others_cores = round(self.others / self.wall, 3) if self.others is not None and self.wall > 0 else None
        contended = bool(
            (load is not None and load > cores) or (others_cores is not None and others_cores >= OTHERS_CORES_CONTENDED)
        )
        return {
            "load_avg_1m": round(load, 2) if load is not None else None,
            "cpu_count": cores,
            "other_cpu_seconds": round(self.others, 3) if self.others is not None else None,
            "other_cores_in_use": others_cores,
            "seconds": round(self.wall, 3),
            "contended": contended,
        }


def merge(*conditions: dict) -> dict:
    """One record for several windows (throughput pass, latency pass): contended if any was."""
    conditions = [c for c in conditions if c]
    if not conditions:
        return {}
    seconds = sum(c["seconds"] for c in conditions)
    others = [c["other_cpu_seconds"] for c in conditions if c["other_cpu_seconds"] is not None]
    loads = [c["load_avg_1m"] for c in conditions if c["load_avg_1m"] is not None]
    return {
        "load_avg_1m": max(loads) if loads else None,
        "cpu_count": conditions[0]["cpu_count"],
        "other_cpu_seconds": round(sum(others), 3) if others else None,
        "other_cores_in_use": round(sum(others) / seconds, 3) if others and seconds else None,
        "seconds": round(seconds, 3),
        "contended": any(c["contended"] for c in conditions),
    }
