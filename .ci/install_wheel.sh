#!/usr/bin/env bash
# Install a built mkdeploy wheel (never the source folders) the way users and the Docker image do:
# torch first, pinned (the CPU wheel on this project's machines; any other pin pulls CUDA builds), then the
# wheel with its extras. The Dockerfile runs this step; tests/test_packaging.py runs it in a fresh venv.
#   usage: [PYTHON=venv/bin/python] [TORCH=torch==2.13.0] .ci/install_wheel.sh WHEEL [EXTRAS]
set -euo pipefail
wheel="$1"
extras="${2:-}"
python="${PYTHON:-python}"
"$python" -m pip install --no-cache-dir -q "${TORCH:-torch==2.13.0}"
"$python" -m pip install --no-cache-dir -q "${wheel}${extras:+[$extras]}"
