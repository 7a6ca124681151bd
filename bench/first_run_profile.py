"""Where a run's seconds went: per arm and phase, from each arm's metrics_detail.phase_seconds.

    /usr/bin/time -v harness run experiments/encoder_vs_decoder.yaml    # on an empty base-measurement cache
    python bench/first_run_profile.py reports/encoder_vs_decoder/<run-id>

Phases (harness/execution/arm_lifecycle.py): startup (interpreter and imports), data, load (tokenizer, model,
method wrap), forgetting_before (the base's loss on the general text; cached per machine after
the first arm on that model), train, save, forgetting_after, label_scoring or generation (the
batched test pass), latency (warm-up + repeats, batch 1), quality (metrics, BERTScore,
reference perplexity, forgetting's CI), golden. Also printed: the machine's load while each
arm's cost metrics were measured, as recorded with them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PHASES = [
    "startup",
    "data",
    "load",
    "forgetting_before",
    "train",
    "save",
    "forgetting_after",
    "label_scoring",
    "generation",
    "latency",
    "quality",
    "golden",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    rows = []
    for path in sorted((args.run_dir / "arms").glob("*/result.json")):
        result = json.loads(path.read_text())
        detail = result.get("metrics_detail") or {}
        rows.append(
            (
                result["arm"]["name"],
                detail.get("phase_seconds") or {},
                detail.get("cost_conditions") or {},
                result.get("reused_from"),
            )
        )
    used = [p for p in PHASES if any(p in r[1] for r in rows)]
    print("| arm | " + " | ".join(used) + " | total | load avg (cost) |")
    print("|---" * (len(used) + 3) + "|")
    totals = dict.fromkeys(used, 0.0)
    for name, phases, conditions, reused in rows:
        for p in used:
            totals[p] += phases.get(p, 0.0)
        note = f"{conditions.get('load_avg_1m')}{' busy' if conditions.get('contended') else ''}" if conditions else "–"
        print(
            f"| {name}{' (reused)' if reused else ''} | "
            + " | ".join(f"{phases.get(p, 0):.1f}" for p in used)
            + f" | {sum(phases.values()):.1f} | {note} |"
        )
    grand = sum(totals.values())
    print("| **all arms** | " + " | ".join(f"{totals[p]:.1f}" for p in used) + f" | {grand:.1f} | |")
    if grand:
        print("| share | " + " | ".join(f"{100 * totals[p] / grand:.0f}%" for p in used) + " | 100% | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
