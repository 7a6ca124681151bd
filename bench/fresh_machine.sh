#!/usr/bin/env bash
# What a new user's machine sees: a fresh clone, the README's set-up, the README's test command,
# with an empty temp dir (no /tmp/ray from an earlier Ray), an empty harness cache and its own venv.
#
#   bench/fresh_machine.sh [PYTEST ARGS...]        e.g. bench/fresh_machine.sh -m "not slow"
#
# Environment:
#   REPO=PATH|URL          what to clone (default: this checkout; its committed HEAD: commit first)
#   HARNESS_CPU_BF16=0|1   take the CPU's fp32 or native-bf16 branch whatever this CPU has
#   KEEP=1                 keep the clone and temp dirs (printed) instead of deleting them
# Prints pass/fail and the seconds of each step; exits with pytest's status.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=${REPO:-$here}

work=$(mktemp -d "${TMPDIR:-/tmp}/fresh-machine.XXXXXX")
cleanup() { [ "${KEEP:-0}" = "1" ] && echo "kept: $work" || rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/tmp" "$work/cache"
export TMPDIR="$work/tmp" RAY_TMPDIR="$work/tmp" HARNESS_CACHE="$work/cache"
unset VIRTUAL_ENV PYTHONPATH

t0=$(date +%s)
git clone -q "$repo" "$work/clone" || { echo "FAIL: git clone $repo"; exit 2; }
cd "$work/clone"
echo "fresh clone of $(git -C "$repo" rev-parse --short HEAD) in $work/clone; TMPDIR=$TMPDIR (empty);" \
  "HARNESS_CACHE=$HARNESS_CACHE (empty); HARNESS_CPU_BF16=${HARNESS_CPU_BF16:-<unset: this CPU decides>}"

t1=$(date +%s)
if ! ./setup.sh > "$work/setup.log" 2>&1; then
  tail -20 "$work/setup.log"; echo "FAIL: ./setup.sh after $(( $(date +%s) - t1 )) s (log: $work/setup.log)"; KEEP=1; exit 2
fi
t2=$(date +%s)
echo "set-up: $(( t2 - t1 )) s"

.venv/bin/python -m pytest "$@" 2>&1 | tee "$work/pytest.log" | tail -15
status=${PIPESTATUS[0]}
t3=$(date +%s)
echo "tests: $(( t3 - t2 )) s; load average now: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
leftover=$(ls -A "$TMPDIR" | grep -c '^ray$' || true)
[ "$status" = 0 ] && echo "PASS in $(( t3 - t0 )) s" || echo "FAIL (pytest exit $status) in $(( t3 - t0 )) s"
[ "$leftover" != 0 ] && echo "note: the suite left $TMPDIR/ray behind"
exit "$status"
