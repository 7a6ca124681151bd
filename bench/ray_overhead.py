"""Ray's overhead per arm: the same arms through the local pool and through the Ray executor on
a two-node Ray cluster on this machine, alternated, with the load average beside every figure.

    python bench/ray_overhead.py [--rounds 2] [--only zero_shot --only few_shot] [--set budget.eval_examples=8]
    python bench/ray_overhead.py --rounds 1 --full     # every arm of peft_methods.yaml at its own budget

Like with like: the local pool runs `--jobs 2` (two arms at once, cores/2 threads each) and the
cluster has two nodes of one CPU each (two arms at once, one thread each), so the difference in
wall time is what Ray adds: connecting the driver, scheduling, worker start-up, the events
queue, and shipping the arm folders back. Overhead per arm = (ray - local) / arms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def harness_run(args: list[str], out: Path) -> tuple[float, dict]:
    command = [
        sys.executable,
        "-m",
        "harness",
        "run",
        str(ROOT / "experiments/peft_methods.yaml"),
        "--force",
        "--no-track",
        "--set",
        f"output_dir={out}",
        *args,
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"harness run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    run_dir = sorted((out / "peft_methods").iterdir())[-1]
    return wall, json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", action="append", default=None)
    parser.add_argument("--set", dest="sets", action="append", default=None)
    parser.add_argument("--full", action="store_true", help="every arm at the file's budget (no --only, no --set)")
    options = parser.parse_args()
    only = options.only or ([] if options.full else ["zero_shot", "few_shot"])
    sets = options.sets or ([] if options.full else ["budget.max_steps=4", "budget.eval_examples=8"])
    common = [a for o in only for a in ("--only", o)] + [a for s in sets for a in ("--set", s)]

    from ray.cluster_utils import Cluster

    session = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": session}
    )
    cluster.add_node(num_cpus=1, temp_dir=session)
    cluster.wait_for_nodes(timeout=120)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(options.rounds):
                for mode, extra in (
                    ("local --jobs 2", ["--jobs", "2"]),
                    ("ray, 2 nodes x 1 CPU", ["--executor", "ray", "--address", cluster.address]),
                ):
                    before = load()
                    wall, results = harness_run(common + extra, Path(tmp) / mode.split()[0])
                    arms = results["arms"]
                    assert all(a["status"] == "ok" for a in arms), [a["error"] for a in arms]
                    rows.append(
                        {
                            "round": round_,
                            "mode": mode,
                            "arms": len(arms),
                            "wall_s": round(wall, 1),
                            "load_before": before,
                            "load_after": load(),
                            "arm_train_s": [a["consumed"]["seconds"] if a["consumed"] else None for a in arms],
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        cluster.shutdown()
    local = [r["wall_s"] for r in rows if r["mode"].startswith("local")]
    ray = [r["wall_s"] for r in rows if r["mode"].startswith("ray")]
    arms = rows[0]["arms"]
    pairs = list(zip(local, ray))
    print(
        json.dumps(
            {
                "local_wall_s": local,
                "ray_wall_s": ray,
                "ray_overhead_per_arm_s": [round((on_ray - here) / arms, 1) for here, on_ray in pairs],
                "ray_overhead_share": [round((on_ray - here) / here, 3) for here, on_ray in pairs],
            }
        )
    )


if __name__ == "__main__":
    main()
