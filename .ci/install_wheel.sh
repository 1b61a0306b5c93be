#!/usr/bin/env bash
# Install a built mkdeploy wheel (never the source folders) the way users and the Docker image do:
# torch first, pinned (the CPU wheel on this project's machines; any other pin pulls CUDA builds), then the
# wheel with its extras. TORCH=none skips torch: the base install (no extras) serves ONNX exports without it.
# The Dockerfile runs this step; tests/test_packaging.py runs it in fresh venvs.
#   usage: [PYTHON=venv/bin/python] [TORCH=torch==2.13.0|none] .ci/install_wheel.sh WHEEL [EXTRAS]
set -euo pipefail
wheel="$1"
extras="${2:-}"
python="${PYTHON:-python}"
if [ "${TORCH:-}" != "none" ]; then
  "$python" -m pip install --no-cache-dir -q "${TORCH:-torch==2.13.0}"
fi
"$python" -m pip install --no-cache-dir -q "${wheel}${extras:+[$extras]}"
