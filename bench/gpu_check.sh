#!/usr/bin/env bash
# The CUDA paths of the training loop, on a CUDA machine with no internet (issue 13):
#   1. the default experiment (experiments/encoder_vs_decoder.yaml) at a small budget in bf16 mixed
#      precision: every arm ok, fp32 master weights (checked in the arms' training), CUDA memory
#      profile (peak allocated/reserved) recorded per arm;
#   2. QLoRA with bf16 compute (an arm of that experiment);
#   3. on one GPU, the sharded code path: a full-FT arm under FSDP at world size 1 (torch's
#      fully_shard, every parameter a DTensor) against the same arm unsharded, and the QLoRA arm
#      with activation checkpointing (budget.gradient_checkpointing) against the one without;
#   4. with 2+ GPUs: one LoRA arm under DDP and one full-FT arm under FSDP on 2 devices, each
#      against its one-device arm (same order hash and tokens, loss curve within bf16 noise; the
#      FSDP ranks each hold half of every parameter).
# Prints a table; exits non-zero when any check fails. Packaged models and data must already be
# converted (`harness prepare`); nothing is downloaded.
#
#   bash bench/gpu_check.sh [STEPS]        (STEPS: optimizer steps per arm, default 10)
#   DRY_RUN=1 bash bench/gpu_check.sh      (no GPU: writes the experiments and `harness plan`s them)
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-10}"
PY="${PYTHON:-python}"
WORK="$(mktemp -d -t harness-gpu-check-XXXX)"
DRY_RUN="${DRY_RUN:-0}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

"$PY" - "$WORK" "$STEPS" "$DRY_RUN" <<'EOF' || exit 2
import sys, yaml, torch
work, steps, dry = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
if not torch.cuda.is_available() and not dry:
    sys.exit("gpu_check: no CUDA device visible to torch; run this on a CUDA machine")
if not dry:
    print(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}")
base = yaml.safe_load(open("experiments/encoder_vs_decoder.yaml"))
base["tracking"] = {"enabled": False}
base["budget"].update(max_steps=steps, eval_examples=64, latency_examples=4, precision="bf16")
yaml.safe_dump(base, open(f"{work}/default.yaml", "w"), sort_keys=False)
lora = {"method": "lora", "model": "smollm2", "lr": 1.0e-3, "params": {"dropout": 0.0}}
full = {"method": "full_ft", "model": "smollm2", "lr": 3.0e-5}
multi = dict(base, name="gpu_check_devices", arms=[
    {**lora, "name": "lora 1"}, {**lora, "name": "lora ddp 2", "devices": 2},
    {**full, "name": "full 1"}, {**full, "name": "full fsdp 2", "devices": 2, "strategy": "fsdp"}])
yaml.safe_dump(multi, open(f"{work}/devices.yaml", "w"), sort_keys=False)
sharded = dict(base, name="gpu_check_sharded", arms=[
    {**full, "name": "full 1"}, {**full, "name": "full fsdp 1", "strategy": "fsdp"}])
yaml.safe_dump(sharded, open(f"{work}/sharded.yaml", "w"), sort_keys=False)
qlora = {"method": "qlora", "model": "smollm2", "lr": 1.0e-3}
checkpointed = dict(base, name="gpu_check_checkpointed", arms=[{**qlora, "name": "qlora ckpt"}])
checkpointed["budget"] = dict(base["budget"], gradient_checkpointing=True)
yaml.safe_dump(checkpointed, open(f"{work}/checkpointed.yaml", "w"), sort_keys=False)
EOF

if [ "$DRY_RUN" = "1" ]; then  # what can be checked without a GPU: every experiment plans
  for name in default sharded checkpointed devices; do
    if ( cd "$WORK" && COLUMNS=200 "$PY" -m harness plan "$name.yaml" > "$name.plan.log" 2>&1 ); then
      echo "dry run: $name.yaml plans"
    else
      echo "dry run: $name.yaml does not plan ($WORK/$name.plan.log)"; exit 1
    fi
  done
  exit 0
fi
GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
( cd "$WORK" && "$PY" -m harness run default.yaml --no-track > default.log 2>&1 ); echo "default experiment: exit $?"
( cd "$WORK" && "$PY" -m harness run sharded.yaml --no-track > sharded.log 2>&1 ); echo "FSDP at world size 1: exit $?"
( cd "$WORK" && "$PY" -m harness run checkpointed.yaml --no-track > checkpointed.log 2>&1 ); echo "QLoRA checkpointed: exit $?"
if [ "$GPUS" -ge 2 ]; then
  ( cd "$WORK" && "$PY" -m harness run devices.yaml --no-track > devices.log 2>&1 ); echo "devices: exit $?"
fi

"$PY" - "$WORK" "$GPUS" <<'EOF'
import glob, json, sys
work, gpus = sys.argv[1], int(sys.argv[2])
rows, failed = [], False

def check(name, ok, detail=""):
    global failed
    failed |= not ok
    rows.append((name, "ok" if ok else "FAIL", detail))

def results(name):
    paths = sorted(glob.glob(f"{work}/reports/{name}/*/results.json"))
    return json.load(open(paths[-1]))["arms"] if paths else []

arms = results("encoder_vs_decoder")
check("default experiment ran", bool(arms), f"{work}/default.log")
for a in arms:
    m = a.get("metrics") or {}
    detail = (f"acc {m.get('accuracy')}, peak alloc {m.get('peak_memory_mb')} MB, reserved "
              f"{m.get('peak_cuda_reserved_mb')} MB, {m.get('train_tokens_per_s')} tok/s") if a["status"] == "ok" \
        else a.get("error", "")[:120]
    check(f"bf16: {a['arm']['name']}", a["status"] == "ok", detail)
    if a["status"] == "ok":
        check(f"  CUDA memory profile: {a['arm']['name']}", m.get("peak_cuda_reserved_mb") is not None)
check("QLoRA (bf16 compute) among them", any(a["arm"]["method"] == "qlora" and a["status"] == "ok" for a in arms))
default_qlora = next((a for a in arms if a["arm"]["method"] == "qlora" and a["status"] == "ok"), None)


def same_training(a, b, tolerance=2e-2):
    """(ok, detail) of two arms trained alike: the same budget audit, losses within bf16 noise."""
    same = all(a["consumed"][k] == b["consumed"][k] for k in ("steps", "examples", "tokens", "order_hash"))
    gap = max(abs(x[1] - y[1]) for x, y in zip(a["curves"]["train_loss"], b["curves"]["train_loss"]))
    return same and gap <= tolerance, f"same budget audit: {same}; max loss gap {gap:.2e}"


def sharded_ranks(arm, world):
    """(ok, detail): every rank holds ~1/world of every parameter (DTensor local shards)."""
    ranks = (arm["consumed"].get("extra", {}).get("devices") or {}).get("ranks") or []
    ok = len(ranks) == world and all(
        r["unsharded_params"] == 0 and r["blocks"] > 0 and abs(r["max_fraction"] - 1 / world) < 0.05 for r in ranks
    )
    return ok, "; ".join(f"rank {i}: {r['state_mb']} MB state, {r['blocks']} blocks" for i, r in enumerate(ranks))


one_gpu = {a["arm"]["name"]: a for a in results("gpu_check_sharded")}
a, b = one_gpu.get("full 1"), one_gpu.get("full fsdp 1")
if a and b and a["status"] == b["status"] == "ok":
    check("full fsdp 1 vs full 1 (world size 1)", *same_training(a, b))
    check("  FSDP really sharded (DTensor, every block)", *sharded_ranks(b, 1))
else:
    check("full fsdp 1 vs full 1 (world size 1)", False, ((b or a or {}).get("error") or f"{work}/sharded.log")[:120])
ckpt = next(iter(results("gpu_check_checkpointed")), None)
if ckpt and ckpt["status"] == "ok" and default_qlora:
    ok, detail = same_training(default_qlora, ckpt)
    peak = (ckpt["metrics"].get("peak_memory_mb"), default_qlora["metrics"].get("peak_memory_mb"))
    check("qlora ckpt vs qlora (activation checkpointing)", ok, f"{detail}; peak alloc {peak[0]} vs {peak[1]} MB")
else:
    reason = (ckpt or {}).get("error") or f"{work}/checkpointed.log"
    check("qlora ckpt vs qlora (activation checkpointing)", False, reason[:120])
if gpus >= 2:
    arms = {a["arm"]["name"]: a for a in results("gpu_check_devices")}
    check("devices experiment ran", len(arms) == 4, f"{work}/devices.log")
    for one, two in (("lora 1", "lora ddp 2"), ("full 1", "full fsdp 2")):
        a, b = arms.get(one), arms.get(two)
        ok = bool(a and b and a["status"] == b["status"] == "ok")
        detail = (b or {}).get("error", "")[:120] if not ok else ""
        if ok:  # bf16 autocast: reductions in another order on 2 devices
            ok, detail = same_training(a, b)
            detail += f"; acc {a['metrics'].get('accuracy')} vs {b['metrics'].get('accuracy')}"
        check(f"{two} vs {one}", ok, detail)
        if ok and "fsdp" in two:
            check("  FSDP really sharded over 2", *sharded_ranks(b, 2))
else:
    rows.append(("DDP / FSDP on 2 devices", "skipped", f"{gpus} GPU visible"))
width = max(len(r[0]) for r in rows)
print(f"\n{'check':{width}}  status  detail")
for name, status, detail in rows:
    print(f"{name:{width}}  {status:6}  {detail}")
print(f"\nfolders: {work}")
sys.exit(1 if failed else 0)
EOF
