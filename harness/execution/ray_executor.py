"""The Ray executor: one Ray task per arm (Ray Core), for a cluster of machines.

The task runs the same arm process as the local pool, in a scratch folder on whichever node Ray
picked, with `num_gpus` = the devices the arm needs (never a fraction: a measured arm never shares
a GPU) and `num_cpus` = cpus_per_arm. No shared filesystem is assumed: the arm's folder comes back
as the task's return value (a tar archive through Ray's object store) and the driver writes it into
the run, so the driver never reads a worker's disk. Progress events travel through a Ray queue.

Failures: a worker process or node that dies is Ray's to retry (`max_retries`, default 2); an
exception inside the arm is the arm's `failed` result (the arm process exits 0 having written it),
never retried; an arm process killed on the worker (out of memory) is `failed`, as locally.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError
from harness.execution.devices import devices_needed
from harness.execution.launch import Event, Finished, Started, arm_environment, run_arm_process
from harness.results.arm_result import now

# What an arm process on a worker takes from the driver's environment, when the driver sets it.
FORWARDED_ENV = (
    "PYTHONPATH",
    "HARNESS_CACHE",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
)
STEP_EVENT_INTERVAL_S = 0.5  # a queue put is a remote call: step events are thinned to two a second


def _import_ray():
    try:
        import ray
    except ImportError:
        raise HarnessError(
            "--executor ray needs the `ray` package, which is not installed in this environment",
            fix="run ./setup.sh (it installs the pinned ray), or pip install -c constraints.txt ray",
        ) from None
    return ray


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_arm: int = 1,
        max_retries: int = 2,
        source: str = "the experiment file",
    ):
        self.ray = _import_ray()
        self.address, self.cpus_per_arm, self.max_retries, self.source = address, cpus_per_arm, max_retries, source
        self._connected_here = False

    # ------------------------------------------------------------------ the cluster

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        env = {k: os.environ[k] for k in ("PYTHONPATH",) if os.environ.get(k)}
        starts_here = self.address is None and not os.environ.get("RAY_ADDRESS")
        try:  # a Ray started here for this run needs no dashboard (and ray.init refuses it when joining)
            ray.init(
                address=self.address,
                logging_level="WARNING",
                log_to_driver=False,
                **({"include_dashboard": False} if starts_here else {}),
                runtime_env={"env_vars": env} if env else None,
            )
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise HarnessError(
                f"could not reach the Ray cluster at {self.address or 'this machine'} ({err})",
                key="executor.address",
                fix="start it with `ray start --head` and pass --address auto or ray://host:10001",
            ) from None
        self._connected_here = True

    def _nodes(self) -> list[dict]:
        return [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]

    def describe(self) -> str:
        self._connect()
        nodes = self._nodes()
        gpus, cpus = sum(n.get("GPU", 0) for n in nodes), sum(n.get("CPU", 0) for n in nodes)
        return (
            f"ray: {len(nodes)} node(s), {gpus:g} GPU(s), {cpus:g} CPU(s); {self.cpus_per_arm} CPU(s) per arm; "
            f"a dead worker or node is retried up to {self.max_retries} time(s)"
        )

    def _gpus_per_arm(self, arm, nodes: list[dict]) -> int:
        """The arm's devices as whole GPUs; 0 on a cluster without GPUs (a CPU arm). An arm that no
        node can hold is an error now, not a task that waits forever."""
        if not any(n.get("GPU", 0) for n in nodes):
            need = 0
        else:
            need = devices_needed(arm)
        if not any(n.get("GPU", 0) >= need and n.get("CPU", 0) >= self.cpus_per_arm for n in nodes):
            raise HarnessError(
                f"no node of the Ray cluster has {need} GPU(s) and {self.cpus_per_arm} CPU(s) free "
                f"for arm '{arm.name}'",
                file=self.source,
                key="executor.cpus_per_arm",
                fix="lower executor.cpus_per_arm, or add a bigger node to the cluster",
            )
        return need

    # ------------------------------------------------------------------ running arms

    def run(self, jobs: list[tuple[object, Path]]) -> Iterator[Started | Event | Finished]:
        ray = self.ray
        self._connect()
        pending: dict = {}
        try:
            from ray.util.queue import Queue

            nodes = self._nodes()
            events = Queue(actor_options={"num_cpus": 0})
            task = ray.remote(_arm_task)
            env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
            started: dict[int, str] = {}
            for index, (arm, arm_dir) in enumerate(jobs):
                ref = task.options(
                    num_gpus=self._gpus_per_arm(arm, nodes),
                    num_cpus=self.cpus_per_arm,
                    max_retries=self.max_retries,
                    retry_exceptions=False,
                    name=f"harness arm {arm.slug}",
                ).remote(index, arm.to_json(), env, events, self.cpus_per_arm)
                pending[ref] = index
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for index, event in events.get_nowait_batch(events.qsize()):
                    arm = jobs[index][0]
                    if event["event"] == "started":
                        started.setdefault(index, now())
                        yield Started(arm, event["where"])
                    else:
                        yield Event(arm, event)
                for ref in done:
                    index = pending.pop(ref)
                    arm, arm_dir = jobs[index]
                    yield self._collect(ref, arm, arm_dir, started.get(index) or now())
        finally:
            for ref in pending:  # Ctrl-C: running arms are cancelled, finished ones were kept
                ray.cancel(ref, force=True)
            if self._connected_here:
                ray.shutdown()
                self._connected_here = False

    def _collect(self, ref, arm, arm_dir: Path, started_at: str) -> Finished:
        from ray.exceptions import RayError, RayTaskError

        try:
            out = self.ray.get(ref)
        except RayTaskError as err:  # raised by the task around the arm, not inside it: never retried
            return Finished(arm, None, started_at, error=f"the arm's Ray task failed: {err.cause!r}")
        except RayError as err:  # a worker or node that died more often than max_retries, or cancelled
            return Finished(
                arm,
                None,
                started_at,
                error=f"its Ray worker or node was lost after {self.max_retries} retries: {type(err).__name__}",
            )
        if out.get("archive"):
            unpack_arm_folder(out["archive"], arm_dir)
        return Finished(
            arm,
            out.get("returncode"),
            started_at,
            error=out.get("error"),
            extra={"node": out.get("node"), "attempt": out.get("attempt")},
        )


def unpack_arm_folder(archive: bytes, arm_dir: Path) -> None:
    """Write a returned arm folder into the run: extracted beside it first, then moved in with
    result.json last, so a reader never sees a result without its predictions and adapter."""
    incoming = Path(tempfile.mkdtemp(prefix=f".{arm_dir.name}.", dir=arm_dir.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            tar.extractall(incoming, filter="data")  # no absolute paths, links out or devices
        entries = sorted(incoming.iterdir(), key=lambda p: p.name == "result.json")
        for entry in entries:
            target = arm_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:  # no compression: adapters are already dense
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


def missing_inputs(arm: dict) -> list[str]:
    """Data and golden-set files the arm names that this node lacks (they are absolute paths from
    the driver's plan: user files must be at the same path on every node)."""
    tasks = [arm["task"], *arm.get("tasks", {}).values()]
    paths = [
        t["data"][s]
        for t in tasks
        for s in ("train", "validation", "test", "preference", "preference_test")
        if t.get("data", {}).get(s)
    ]
    return [p for p in [*paths, *arm.get("golden_sets", [])] if not Path(p).exists()]


def _arm_task(index: int, arm_json: str, env: dict, events, cpus: int) -> dict:
    """Runs on a Ray worker: the arm process in a scratch folder, whose contents are returned."""
    import json
    import platform

    import ray

    context = ray.get_runtime_context()
    gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
    node = f"{platform.node()}:{context.get_node_id()[:8]}"
    arm = json.loads(arm_json)
    scratch = Path(tempfile.mkdtemp(prefix="harness-arm-", dir=os.environ.get("HARNESS_SCRATCH")))
    try:
        missing = missing_inputs(arm)
        if missing:
            return {
                "returncode": None,
                "node": node,
                "error": f"node {node} lacks {missing[0]}: user data must sit at the same path on every node "
                "(a shared filesystem) or be a packaged dataset (prepared: on every node by ./setup.sh)",
            }
        (scratch / "arm.json").write_text(arm_json)
        where = f"{node} " + (f"gpu {','.join(gpus)}" if gpus else f"cpu x{cpus}")
        events.put((index, {"event": "started", "where": where}))
        last = [0.0]

        def forward(event: dict) -> None:
            if event["event"] == "step" and event.get("step") != event.get("total"):
                if time.monotonic() - last[0] < STEP_EVENT_INTERVAL_S:
                    return
                last[0] = time.monotonic()
            events.put((index, event))

        # An empty CUDA_VISIBLE_DEVICES for a CPU arm: Ray leaves every GPU visible to num_gpus=0 tasks.
        child_env = arm_environment(
            {
                **env,
                "CUDA_VISIBLE_DEVICES": ",".join(gpus),
                "HARNESS_THREADS": str(cpus),
                "HARNESS_EXECUTOR": "ray",
                "HARNESS_NODE": node,
            }
        )
        devices = int(json.loads(arm_json).get("devices") or 1)  # k > 1: the arm runs under torchrun
        code = run_arm_process(scratch / "arm.json", scratch, env=child_env, on_event=forward, devices=devices)
        return {"returncode": code, "archive": _pack(scratch), "node": node}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
