#!/usr/bin/env bash
# The GPU checks in one call on a lent machine (device tool), from the repository root.
#   benchmarks/gpu_check.sh [CT2_TINY_EN_DIR CLIPS_MANIFEST] [OUT_DIR]
# Always (self-contained, random weights of the real shapes; nothing to carry):
#   1. the CUDA-graph test: the static-cache step replayed as a CUDA graph gives the transformers loop's tokens;
#   2. benchmarks/gpu_decode.py: batch-1 latency and batch-32 throughput, transformers loop vs CUDA graph,
#      tiny.en, base and small shapes in fp16, one process (issue 17's table).
# With a CTranslate2 tiny.en and a clip manifest, also the ONNX path on real weights: import tiny.en, export
# fp32 / int8 / fp16 with parity checked on CUDA, transcribe on the CUDA provider, and bench PyTorch (GPU,
# fp16, CUDA graphs) against ONNX Runtime (CUDA provider with IOBinding, fp32 and fp16), same clips, one run.
set -euo pipefail
if [ $# -ge 2 ]; then CT2=$1; MANIFEST=$2; OUT=${3:-${OUT:-benchmarks/results}}; else CT2=; OUT=${1:-${OUT:-benchmarks/results}}; fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -o addopts="" --noconftest \
  tests/test_static_decoder.py -k "cuda_graph or buckets" 2>&1 | tee "$OUT/gpu_tests.txt"
python3 benchmarks/gpu_decode.py --out "$OUT/gpu_decode.md"
[ -n "$CT2" ] || exit 0
MKD="python3 -m mkdeploy.cli.main"
python3 -c "import onnxruntime as o, torch; print('onnxruntime', o.__version__, o.get_available_providers(), '| torch', torch.__version__, torch.cuda.is_available())"
$MKD import-ct2 "$CT2" /tmp/tiny.en --force
CLIPS=$(python3 -c "import json,sys,os; d=os.path.dirname(sys.argv[1]); print(' '.join(os.path.join(d, json.loads(l)['audio']) for l in open(sys.argv[1])))" "$MANIFEST")
ARGS=(); for c in $CLIPS; do ARGS+=(--sample-audio "$c"); done
$MKD export /tmp/tiny.en /tmp/tiny.en-onnx --quantize int8 --fp16 --device cuda --force "${ARGS[@]}" | tee "$OUT/export.txt"
cp /tmp/tiny.en-onnx/mkdeploy_export.json "$OUT/"
$MKD transcribe /tmp/tiny.en-onnx $CLIPS --device cuda --output-dir /tmp/tx --format json --force 2>&1 | tee "$OUT/transcribe_cuda.txt"
$MKD transcribe /tmp/tiny.en-onnx $CLIPS --device cuda --variant fp16 --output-dir /tmp/tx16 --format txt --force 2>&1 | tee -a "$OUT/transcribe_cuda.txt"
$MKD bench "$MANIFEST" --device cuda --repeats 10 --warmup 2 --output /tmp/bench_gpu --force \
  -m "torch fp16 graphs (cuda)=/tmp/tiny.en" -m "onnx fp32 (cuda)=/tmp/tiny.en-onnx" -m "onnx fp16 (cuda)=/tmp/tiny.en-onnx/fp16"
cp /tmp/bench_gpu/bench.md /tmp/bench_gpu/bench.json "$OUT/"
