"""A local Ray cluster for tests that depends on nothing outside its own temp folder.

Not a test file. `local_cluster(...)` starts a head and worker nodes with their own temp root
(`RAY_TMPDIR` and every node's `temp_dir`, so nothing is read from or written to `/tmp/ray`, which a
fresh machine does not have and another user's Ray owns), a free GCS port, and stops them again.
Leftovers are counted in this test process's own tree and among processes that name this cluster's
temp root; another user's Ray cluster on the same machine is never counted, never stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_naming(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line contains `marker`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def reap_own_children() -> None:
    """Collect the exit status of this process's finished children (Ray's node processes are our
    children: unreaped, they stay as zombies that a process scan would count)."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                child.wait(timeout=0)


def wait_until_gone(marker: str, timeout: float = 60) -> list[psutil.Process]:
    """The processes naming `marker` that are still alive after waiting for them to exit (by
    psutil.wait_procs, which returns as soon as they are gone; `timeout` is the safety net)."""
    reap_own_children()
    _, alive = psutil.wait_procs(processes_naming(marker), timeout=timeout)
    reap_own_children()
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@contextlib.contextmanager
def local_cluster(node_env: dict[str, dict[str, str]], *, num_cpus: int = 1, num_gpus: int = 1) -> Iterator[str]:
    """A Ray cluster with one node per entry of `node_env` (the first is the head), each with
    `num_cpus`, `num_gpus` (logical) and its own environment; yields the GCS address. On exit every
    process of this cluster is gone (asserted)."""
    import ray
    from ray.cluster_utils import Cluster

    root = tempfile.mkdtemp(prefix="rt")  # short: Ray's socket paths have a length limit
    os.makedirs(os.path.join(root, "ray"), exist_ok=True)  # where Cluster writes its address file
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = root  # never the machine-wide /tmp/ray

    def node(env: dict[str, str]) -> dict:  # free ports of its own: never another cluster's defaults
        return {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "temp_dir": root,
            "env_vars": env,
            "dashboard_agent_listen_port": free_port(),
            "metrics_export_port": free_port(),
            "metrics_agent_port": free_port(),
            "runtime_env_agent_port": free_port(),
        }

    cluster = None
    try:
        names = list(node_env)
        head = {**node(node_env[names[0]]), "include_dashboard": False, "gcs_server_port": free_port()}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for name in names[1:]:
            cluster.add_node(**node(node_env[name]))
        cluster.wait_for_nodes(timeout=300)
        yield cluster.address
    finally:
        if cluster is not None:
            cluster.shutdown()
        ray._private.services.find_gcs_addresses.cache_clear()
        left = wait_until_gone(root)
        for proc in left:  # never leave them running, even when the check below fails
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes of this test's cluster left behind: {[p.pid for p in left]}"


@contextlib.contextmanager
def foreign_cluster() -> Iterator[Path]:
    """Another user's Ray head on this machine (`ray start`, its own temp dir, detached from us):
    what a shared machine has. Stopped at the end by killing only its own processes."""
    import subprocess
    import sys

    root = Path(tempfile.mkdtemp(prefix="rf"))
    (root / "ray").mkdir()
    ray_cli = Path(sys.executable).with_name("ray")
    env = {**os.environ, "RAY_TMPDIR": str(root)}
    subprocess.run(
        [str(ray_cli), "start", "--head", "--port", str(free_port()), "--temp-dir", str(root), "--num-cpus", "0",
         "--include-dashboard", "false", "--disable-usage-stats"],
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    try:
        yield root
    finally:
        for proc in processes_naming(str(root)):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(processes_naming(str(root)), timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def settle(predicate, timeout: float = 300, every: float = 0.2):
    """Poll `predicate` until it holds (an event: a file appears, a process starts) and return what
    it returned, or None after `timeout`, which is only the safety net against a hang, never what a
    test measures."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            return None
        time.sleep(every)
    return value
