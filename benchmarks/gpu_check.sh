#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): model harness, MirroredStrategy,
# mixed_float16 vs float32, TF CRF vs pydensecrf, SavedModel serving, on a
# machine with an NVIDIA GPU; prints one JSON line. Stopped after 8 minutes.
#   benchmarks/gpu_check.sh [--out FILE] [--parts harness mirrored mixed crf serving]
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec timeout --signal=TERM --kill-after=15 "${GPU_CHECK_SECONDS:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
