"""What runs inside one Ray task: an arm (or, for an arm over several nodes, this node's ranks of it)
in a scratch folder on the worker, whose contents are returned to the driver.

Nothing here blocks on Ray while the arm runs: a task blocked in `ray.get` lends its CPUs back to
the scheduler, which then starts another arm on them (measured: 3 arm processes at once where the
CPUs held 2, when progress went through `ray.util.queue.Queue.put`). Progress events are sent to
the driver's EventBox actor without waiting for a reply; calls from one caller to one actor run in
the order they were made.

With `executor.storage` (harness.execution.arm_storage) the arm's checkpoints (files, or an FSDP
arm's DCP folders) are copied there as they appear and the next attempt on any node starts from the
newest; every node of an arm over several nodes starts from the same one (each rank reads its own RNG
state from it). A scratch folder that a killed attempt of the arm left on this node is deleted when
the next attempt starts here. Checkpoints never travel back to the driver (they are of no use to it).

An FSDP arm over several nodes is the exception: DCP has every rank write its own shards into one
folder and read them back from it, which per-node scratch folders cannot give, so its ranks
checkpoint straight into the storage (a path every node sees; the driver refuses a URI for such an
arm, harness.execution.ray_executor). An arm over several nodes without storage writes no
checkpoints: Ray does not retry it and its scratch folders go with it, so nothing would read them.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.execution.arm_storage import CHECKPOINT_NAME, FOLDER_NAME, step_of
from harness.execution.launch import MultiNode, arm_environment, run_arm_process
from harness.training.checkpoint import FOLDER as CHECKPOINTS
from harness.training.checkpoint import FOLDER_ENV as CHECKPOINTS_ENV
from harness.training.checkpoint import NONE as NO_CHECKPOINTS

STEP_EVENT_INTERVAL_S = 0.5  # an event is a remote call: step events are thinned to two a second
SCRATCH_PREFIX = "harness-arm-"
RENDEZVOUS_WAIT_S = 600  # how long the other nodes of an arm wait for its first node to publish its address


class EventBox:
    """The driver's mailbox (a Ray actor with no CPU): tasks `put` without waiting, the driver
    `drain`s. Also where the first node of a multi-node arm leaves its rendezvous address."""

    def __init__(self):
        self.items: list = []
        self.endpoints: dict = {}

    def put(self, item) -> None:
        self.items.append(item)

    def drain(self) -> list:
        items, self.items = self.items, []
        return items

    def set_endpoint(self, key: str, endpoint: str) -> None:
        self.endpoints[key] = endpoint

    def endpoint(self, key: str) -> str | None:
        return self.endpoints.get(key)

    def sync(self) -> None:
        """Returns once every earlier call of the caller has run (one caller's calls run in order)."""


@dataclass
class TaskPlan:
    """How one task runs its part of an arm."""

    index: int  # the arm's position in the driver's list
    devices: int  # ranks on this node (k for a one-node arm)
    threads: int  # CPU threads per rank
    storage: str | None = None
    nodes: int = 1
    node_rank: int = 0


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


def pack(folder: Path) -> bytes:
    """The arm folder as a tar archive, without its checkpoints."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:  # no compression: adapters are already dense
        for entry in sorted(folder.iterdir()):
            if entry.name != CHECKPOINTS:
                tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


def fresh_scratch(arm_hash: str, node_rank: int) -> Path:
    """This attempt's scratch folder; folders of earlier attempts of the arm on this node are
    deleted first (Ray retries an arm only once its attempt is dead)."""
    root = Path(os.environ.get("HARNESS_SCRATCH") or tempfile.gettempdir())
    prefix = f"{SCRATCH_PREFIX}{arm_hash[:12]}-r{node_rank}-"
    for stale in root.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def shares_checkpoints(arm: dict, nodes: int) -> bool:
    """An FSDP arm over several nodes: its ranks checkpoint into one folder that all of them see."""
    return nodes > 1 and arm.get("budget", {}).get("strategy") == "fsdp"


def local_checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints in an arm's checkpoint folder, oldest first: step files, and DCP
    folders (complete once renamed from their temporary name)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if (p.is_file() and CHECKPOINT_NAME.fullmatch(p.name)) or (p.is_dir() and FOLDER_NAME.fullmatch(p.name))
    )


class CheckpointSync:
    """Copies each new checkpoint of the arm's scratch folder to the storage, when an event comes."""

    def __init__(self, storage, arm_hash: str, folder: Path):
        self.storage, self.arm_hash, self.folder = storage, arm_hash, folder
        self.done = {p.name for p in local_checkpoints(folder)}  # downloaded from the storage: there already

    def __call__(self) -> None:
        for path in local_checkpoints(self.folder):
            if path.name in self.done:
                continue
            try:
                self.storage.upload(self.arm_hash, path)
            except FileNotFoundError:  # pruned or discarded by the arm meanwhile: a newer one follows
                pass
            self.done.add(path.name)


def _multi_node(plan: TaskPlan, events, key: str) -> MultiNode | None:
    """Node rank 0 publishes host:free port for torch's store; the others wait for it. Waiting in
    ray.get is harmless here: the arm's CPUs are held by its placement group, not lent out."""
    import socket

    import ray

    if plan.nodes <= 1:
        return None
    if plan.node_rank == 0:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        endpoint = f"{ray.util.get_node_ip_address()}:{port}"
        events.set_endpoint.remote(key, endpoint)
        return MultiNode(plan.nodes, 0, endpoint)
    deadline = time.monotonic() + RENDEZVOUS_WAIT_S
    while (endpoint := ray.get(events.endpoint.remote(key))) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the first node of the arm published no rendezvous address in {RENDEZVOUS_WAIT_S} s")
        time.sleep(0.2)
    return MultiNode(plan.nodes, plan.node_rank, endpoint)


def run_arm_task(arm_json: str, env: dict, events, plan: TaskPlan) -> dict:
    """Runs on a Ray worker. Returns the exit status, the node and (on node rank 0) the arm folder."""
    import ray

    from harness.execution.arm_storage import ArmStorage

    context = ray.get_runtime_context()
    gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
    node = f"{platform.node()}:{context.get_node_id()[:8]}"
    arm = json.loads(arm_json)
    storage = ArmStorage(plan.storage) if plan.storage else None
    scratch = fresh_scratch(arm["hash"], plan.node_rank)
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
        lead = plan.node_rank == 0
        shared = storage is not None and shares_checkpoints(arm, plan.nodes)
        if shared and not Path(storage.root).is_dir():
            return {
                "returncode": None,
                "node": node,
                "error": f"node {node} does not see executor.storage {plan.storage}: the ranks of an FSDP arm "
                "over several nodes checkpoint into it from every node, so it must be a folder mounted at the "
                "same path on every node",
            }
        attempt = resumed = None
        if storage is not None and lead:
            attempt = storage.start_attempt(arm["hash"])
        if shared and lead:  # nothing writes yet: the other nodes' ranks wait for this node's
            storage.sweep(arm["hash"])  # temporaries a killed attempt left
            in_place = local_checkpoints(Path(storage.checkpoint_folder(arm["hash"])))
            resumed = step_of(in_place[-1].name) if in_place else None
        elif storage is not None and not shared:  # every node: every rank resumes from the same checkpoint
            resumed = storage.download(arm["hash"], scratch / CHECKPOINTS)
        where = f"{node} " + (f"gpu {','.join(gpus)}" if gpus else f"cpu x{plan.threads * plan.devices}")
        if lead:
            events.put.remote((plan.index, {"event": "started", "where": where, "attempt": attempt}))
        uploads = storage is not None and lead and not shared
        sync = CheckpointSync(storage, arm["hash"], scratch / CHECKPOINTS) if uploads else None
        last = [0.0]

        def forward(event: dict) -> None:
            if sync is not None:
                sync()
            if event["event"] == "step" and event.get("step") != event.get("total"):
                if time.monotonic() - last[0] < STEP_EVENT_INTERVAL_S:
                    return
                last[0] = time.monotonic()
            events.put.remote((plan.index, event))

        # An empty CUDA_VISIBLE_DEVICES for a CPU arm: Ray leaves every GPU visible to num_gpus=0 tasks.
        child_env = arm_environment(
            {
                **env,
                "CUDA_VISIBLE_DEVICES": ",".join(gpus),
                "HARNESS_THREADS": str(plan.threads * plan.devices),  # split over the ranks by launch
                "HARNESS_EXECUTOR": "ray",
                "HARNESS_NODE": node,
                "HARNESS_ATTEMPT": str(attempt) if attempt else None,
                CHECKPOINTS_ENV: storage.checkpoint_folder(arm["hash"])
                if shared
                else (NO_CHECKPOINTS if plan.nodes > 1 and storage is None else ""),
            }
        )
        multi_node = _multi_node(plan, events, str(plan.index))
        code = run_arm_process(
            scratch / "arm.json", scratch, env=child_env, on_event=forward, devices=plan.devices, multi_node=multi_node
        )
        out = {"returncode": code, "node": node, "attempt": attempt, "resumed_from_step": resumed}
        if lead:
            if storage is not None and _finished_ok(scratch):
                storage.clear(arm["hash"])
            out["archive"] = pack(scratch)
            ray.get(events.sync.remote())  # the arm is over: the driver drains every event before this returns
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _finished_ok(folder: Path) -> bool:
    try:
        return json.loads((folder / "result.json").read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False
