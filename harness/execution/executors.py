"""Choosing the executor of a run: the YAML's `executor:` block, overridden by --executor, --jobs
and --address."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.execution.local_pool import LocalPool

EXECUTORS = ("local", "ray")


def make_executor(
    experiment, *, name: str | None = None, jobs: int | None = None, address: str | None = None, fresh: bool = False
):
    """fresh (--force): arms start at step 0, whatever checkpoints a storage holds for them."""
    spec = experiment.executor
    name = name or spec.name
    source = experiment.source_file or "the experiment file"
    if name not in EXECUTORS:
        raise HarnessError(f"--executor {name} is not an executor", fix="use --executor local or --executor ray")
    if name == "local":
        if address:
            raise HarnessError(
                "--address names a Ray cluster and this run uses the local pool",
                fix="add --executor ray, or drop --address",
            )
        return LocalPool(jobs=jobs or spec.jobs)
    if jobs:
        raise HarnessError(
            "--jobs sets the local pool's size; a Ray cluster runs as many arms as its GPUs and CPUs allow",
            fix="drop --jobs, or use --executor local",
        )
    from pathlib import Path

    from harness.execution.arm_storage import resolve_location
    from harness.execution.ray_executor import RayExecutor

    base = Path(experiment.source_file).parent if experiment.source_file else Path.cwd()
    return RayExecutor(
        address=address or spec.address,
        cpus_per_arm=spec.cpus_per_arm,
        max_retries=spec.max_retries,
        storage=resolve_location(spec.storage, base) if spec.storage else None,
        fresh=fresh,
        source=source,
    )
