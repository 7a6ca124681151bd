"""Cost flags that mean something (harness.eval.machine_load): a measurement is contended when
processes outside the harness's own process tree used CPU during it, whatever the load average
says. Real processes burn real cores here; the tests wait for CPU seconds to accumulate, not for
wall time to pass."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from harness.eval import machine_load

SPIN = "import sys; sys.stdout.write('ready\\n'); sys.stdout.flush()\nwhile True: pass"
LAUNCHER = (  # an arm that starts k ranks (as torchrun does) and prints their pids
    "import subprocess, sys\n"
    "ranks = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(int(sys.argv[1]))]\n"
    "print(' '.join(str(r.pid) for r in ranks), flush=True)\n"
    "ranks[0].wait()\n"
)


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _wait_for_cpu(pids: list[int], seconds: float, timeout: float = 120.0) -> None:
    """Until every process in `pids` has used `seconds` more CPU than now (an event, not a time)."""
    start = {pid: _cpu(pid) for pid in pids}
    deadline = time.monotonic() + timeout
    while any(_cpu(pid) - start[pid] < seconds for pid in pids):
        assert time.monotonic() < deadline, "the spinning processes never got CPU time"
        time.sleep(0.05)


@pytest.fixture
def arm():
    """An arm of this process's tree using every core: a launcher and one rank per CPU."""
    cores = os.cpu_count() or 1
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(cores)], stdout=subprocess.PIPE, text=True)
    ranks = [int(pid) for pid in launcher.stdout.readline().split()]
    yield launcher, ranks
    for pid in ranks:
        psutil.Process(pid).kill()
    launcher.wait(timeout=60)


@pytest.fixture
def outsider():
    """A process burning a core that is NOT in this process's tree: started through a shell that
    exits at once, so it is re-parented away from us."""
    out = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -c "{SPIN}" > /dev/null 2>&1 & echo $!'],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(out.stdout.strip())
    process = psutil.Process(pid)
    yield pid
    process.kill()


def test_a_measurement_beside_a_process_burning_a_core_is_contended(arm, outsider):
    launcher, ranks = arm
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    assert outsider not in ours and set(ranks) <= ours  # the outsider is not in our tree; the ranks are
    before = {pid: _cpu(pid) for pid in [outsider, *ranks]}
    with machine_load.LoadWindow(root=os.getpid()) as window:
        _wait_for_cpu([outsider, *ranks], 0.5)
    outsider_used = _cpu(outsider) - before[outsider]
    ranks_used = sum(_cpu(pid) - before[pid] for pid in ranks)
    conditions = window.conditions()
    assert conditions["contended"] is True
    # the outsider's CPU time is counted as others', the ranks' as ours (0.05 s: sampling jitter)
    assert window.others >= outsider_used - 0.05
    assert window.own >= ranks_used - 0.05


class ProcessesOnly:
    """A machine on which only the given processes run: its CPU total is theirs. Tree sums are
    psutil's, as in a run, so a process of the arm that the tree missed would show as another's."""

    def __init__(self, pids: list[int]):
        self.pids, self.real = pids, machine_load.PsutilClock()

    def machine_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def tree_seconds(self, root: int) -> float:
        return self.real.tree_seconds(root)


def test_the_same_measurement_alone_is_not_contended_with_the_arm_using_all_cores(arm, monkeypatch):
    """The shared machine's real load cannot be switched off, so the machine is these processes
    only (ProcessesOnly): the arm's ranks, its launcher and this driver. A load average far above
    the CPUs (as the arm's own threads give) decides nothing any more."""
    launcher, ranks = arm
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    clock = ProcessesOnly([os.getpid(), launcher.pid, *ranks])
    before = sum(_cpu(pid) for pid in ranks)
    with machine_load.LoadWindow(clock=clock, root=os.getpid()) as window:
        _wait_for_cpu(ranks, 0.5)
    conditions = window.conditions()
    assert window.own >= sum(_cpu(pid) for pid in ranks) - before - 0.05  # the grandchildren were counted
    assert window.own >= 0.5 * len(ranks)
    assert conditions["other_cpu_seconds"] <= 0.05 * max(conditions["seconds"], 1.0)
    assert conditions["contended"] is False and conditions["load_avg_1m"] == 64.0


def test_the_arm_names_its_driver_as_the_root_of_the_harness_tree(monkeypatch):
    from harness.execution.launch import arm_environment

    assert arm_environment({})[machine_load.DRIVER_ENV] == str(os.getpid())  # what an arm process inherits
    monkeypatch.setenv(machine_load.DRIVER_ENV, str(os.getppid()))
    assert machine_load.harness_root() == os.getppid()
    monkeypatch.setenv(machine_load.DRIVER_ENV, "999999999")  # not an ancestor: this process's own tree
    assert machine_load.harness_root() == os.getpid()
