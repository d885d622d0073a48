#!/usr/bin/env bash
# The GPU path, measured (issue #17 item 3). Run on a machine with an NVIDIA GPU, from a
# checkout: the exported model under the TensorRT and CUDA providers at batches of
# 1/64/256/1024/4096, its outputs against the CPU provider's, and the bench's scoring stage.
# Writes gpu-check.json and gpu-check.md to the folder given (default gpu-results/).
#
#   bash deploy/gpu-check.sh [OUT] [--model <registry>/<version>]
#
# Needs the project's Python environment (`make setup`, or PYTHON=... pointing at one with
# onnxruntime-gpu and, without --model, torch and transformers to train a small model on
# synthetic traffic). Exits 3 when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-results}"
shift || true
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ] && ! command -v "$PY" >/dev/null; then
  make setup
  PY=.venv/bin/python
fi
nvidia-smi || echo "nvidia-smi: not found"
"$PY" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
PYTHONUNBUFFERED=1 "$PY" -m workers.tools.gpu_check --out "$out" "$@"
