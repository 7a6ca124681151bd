#!/usr/bin/env bash
# The CUDA paths of the training loop, on a CUDA machine with no internet (issue 13):
#   1. the default experiment (experiments/encoder_vs_decoder.yaml) at a small budget in bf16 mixed
#      precision: every arm ok, fp32 master weights (checked in the arms' training), CUDA memory
#      profile (peak allocated/reserved) recorded per arm;
#   2. QLoRA with bf16 compute (an arm of that experiment);
#   3. with 2+ GPUs: one LoRA arm under DDP and one full-FT arm under FSDP on 2 devices, each
#      against its one-device arm (same order hash and tokens, loss curve within bf16 noise).
# Prints a table; exits non-zero when any check fails. Packaged models and data must already be
# converted (`harness prepare`); nothing is downloaded.
#
#   bash bench/gpu_check.sh [STEPS]        (STEPS: optimizer steps per arm, default 10)
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-10}"
PY="${PYTHON:-python}"
WORK="$(mktemp -d -t harness-gpu-check-XXXX)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

"$PY" - "$WORK" "$STEPS" <<'EOF' || exit 2
import sys, yaml, torch
work, steps = sys.argv[1], int(sys.argv[2])
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch; run this on a CUDA machine")
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
EOF

GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count())')"
( cd "$WORK" && "$PY" -m harness run default.yaml --no-track > default.log 2>&1 ); echo "default experiment: exit $?"
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
if gpus >= 2:
    arms = {a["arm"]["name"]: a for a in results("gpu_check_devices")}
    check("devices experiment ran", len(arms) == 4, f"{work}/devices.log")
    for one, two in (("lora 1", "lora ddp 2"), ("full 1", "full fsdp 2")):
        a, b = arms.get(one), arms.get(two)
        ok = bool(a and b and a["status"] == b["status"] == "ok")
        detail = (b or {}).get("error", "")[:120] if not ok else ""
        if ok:
            same = all(a["consumed"][k] == b["consumed"][k] for k in ("steps", "examples", "tokens", "order_hash"))
            gap = max(abs(x[1] - y[1]) for x, y in zip(a["curves"]["train_loss"], b["curves"]["train_loss"]))
            ok = same and gap <= 2e-2  # bf16 autocast: reductions in another order on 2 devices
            detail = f"same budget audit: {same}; max loss gap {gap:.2e}; acc {a['metrics'].get('accuracy')} vs {b['metrics'].get('accuracy')}"
        check(f"{two} vs {one}", ok, detail)
else:
    rows.append(("DDP / FSDP on 2 devices", "skipped", f"{gpus} GPU visible"))
width = max(len(r[0]) for r in rows)
print(f"\n{'check':{width}}  status  detail")
for name, status, detail in rows:
    print(f"{name:{width}}  {status:6}  {detail}")
print(f"\nfolders: {work}")
sys.exit(1 if failed else 0)
EOF
