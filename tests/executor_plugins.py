"""Test-only methods, installed as a real third-party plugin (a dist-info with a `harness.methods`
entry point on PYTHONPATH), so that arm processes started by either executor find them.

Not a test file: test_executors.py and test_ray_executor.py call `install_plugins(folder)`.
"""

from __future__ import annotations

import os
from pathlib import Path

PLUGIN_SOURCE = """
import os, signal, time
from pathlib import Path

from pydantic import Field

from harness.methods.prompting import ZeroShot
from harness.plugins import Params


class Rendezvous(ZeroShot):
    description = "writes its devices to a file, then waits for its sibling's file: both arms run at once"

    class Params(Params):
        folder: str = Field(description="where the two arms leave their files")
        me: str = Field(description="this arm's file")
        other: str = Field(description="the sibling arm's file")

    def wrap(self, model, params, ctx):
        folder = Path(params.folder)
        (folder / params.me).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
        deadline = time.monotonic() + 300
        while not (folder / params.other).exists():  # an event, not a guess at timing
            if time.monotonic() > deadline:
                raise RuntimeError("the sibling arm never started: the arms did not run at the same time")
            time.sleep(0.05)
        return model


class KillWorkerOnce(ZeroShot):
    description = "first attempt: SIGKILLs the process that started it (a Ray worker dying mid-arm)"

    class Params(Params):
        marker: str = Field(description="file that says the worker was already killed once")

    def wrap(self, model, params, ctx):
        marker = Path(params.marker)
        if not marker.exists():
            marker.write_text(str(os.getppid()))
            os.kill(os.getppid(), signal.SIGKILL)
            time.sleep(120)  # the kernel kills this orphan (PR_SET_PDEATHSIG); if not, the arm fails below
            raise RuntimeError("the arm outlived its killed worker")
        return model


def _arm_processes_alive(folder):
    import psutil

    alive = 0
    for path in folder.glob("*.pid"):
        try:
            alive += psutil.Process(int(path.stem)).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            pass
    return alive


class CountAlive(ZeroShot):
    description = "leaves its pid in a folder and counts the arm processes alive there, at start and at exit"

    class Params(Params):
        folder: str = Field(description="where every probe arm leaves its pid and its counts")
        together: int = Field(default=2, description="arms that must be alive at once before it goes on")

    def wrap(self, model, params, ctx):
        import atexit

        folder = Path(params.folder)
        (folder / f"{os.getpid()}.pid").write_text("")
        deadline = time.monotonic() + 300
        while len(list(folder.glob("*.pid"))) < params.together:  # an event, not a guess at timing
            if time.monotonic() > deadline:
                raise RuntimeError("the other probe arms never started")
            time.sleep(0.05)
        (folder / f"{os.getpid()}.start").write_text(str(_arm_processes_alive(folder)))
        atexit.register(lambda: (folder / f"{os.getpid()}.exit").write_text(str(_arm_processes_alive(folder))))
        return model
"""


def install_plugins(site: Path, monkeypatch) -> None:
    """Put the plugin on PYTHONPATH (arm processes, Ray tasks through the forwarded env) and on
    sys.path (the planner in this process), registered through its entry points."""
    (site / "executor_plugins_pkg-0.1.dist-info").mkdir(parents=True)
    (site / "executor_test_plugins.py").write_text(PLUGIN_SOURCE)
    (site / "executor_plugins_pkg-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: executor-plugins-pkg\nVersion: 0.1\n"
    )
    (site / "executor_plugins_pkg-0.1.dist-info" / "entry_points.txt").write_text(
        "[harness.methods]\nrendezvous = executor_test_plugins:Rendezvous\n"
        "kill_worker_once = executor_test_plugins:KillWorkerOnce\n"
        "count_alive = executor_test_plugins:CountAlive\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.syspath_prepend(str(site))
    from harness.methods import method_names, registry

    method_names()  # built-ins registered first: undoing the patch must give back a full registry
    monkeypatch.setattr(registry.METHODS, "loaded", False)
    monkeypatch.setattr(registry.METHODS, "entries", dict(registry.METHODS.entries))
