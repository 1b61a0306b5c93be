#!/usr/bin/env bash
# GPU check of the ONNX path on a CUDA machine: import tiny.en from its CTranslate2 files, export fp32 /
# int8 / fp16 with parity checked on CUDA, transcribe on the CUDA provider, and bench PyTorch (GPU) against
# ONNX Runtime (CUDA provider with IOBinding, fp32 and fp16) and ONNX Runtime on CPU, same clips, one run.
#   benchmarks/gpu_check.sh CT2_TINY_EN_DIR CLIPS_MANIFEST OUT_DIR
set -euo pipefail
CT2=$1; MANIFEST=$2; OUT=$3
MKD="python3 -m mkdeploy.cli.main"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers(), '| torch', torch.__version__, torch.cuda.is_available())"
$MKD import-ct2 "$CT2" /tmp/tiny.en --force
CLIPS=$(python3 -c "import json,sys,os; d=os.path.dirname(sys.argv[1]); print(' '.join(os.path.join(d, json.loads(l)['audio']) for l in open(sys.argv[1])))" "$MANIFEST")
ARGS=(); for c in $CLIPS; do ARGS+=(--sample-audio "$c"); done
$MKD export /tmp/tiny.en /tmp/tiny.en-onnx --quantize int8 --fp16 --device cuda --force "${ARGS[@]}" | tee "$OUT/export.txt"
cp /tmp/tiny.en-onnx/mkdeploy_export.json "$OUT/"
$MKD transcribe /tmp/tiny.en-onnx $CLIPS --device cuda --output-dir /tmp/tx --format json --force 2>&1 | tee "$OUT/transcribe_cuda.txt"
$MKD transcribe /tmp/tiny.en-onnx $CLIPS --device cuda --variant fp16 --output-dir /tmp/tx16 --format txt --force 2>&1 | tee -a "$OUT/transcribe_cuda.txt"
$MKD bench "$MANIFEST" --device cuda --repeats 10 --warmup 2 --output /tmp/bench_gpu --force \
  -m "torch fp32 (cuda)=/tmp/tiny.en" -m "onnx fp32 (cuda)=/tmp/tiny.en-onnx" -m "onnx fp16 (cuda)=/tmp/tiny.en-onnx/fp16"
cp /tmp/bench_gpu/bench.md /tmp/bench_gpu/bench.json "$OUT/"
