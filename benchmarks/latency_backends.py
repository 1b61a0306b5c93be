# Per-clip latency of PyTorch fp32, ONNX Runtime fp32 and int8 on the 4 test sentences, one run.
# Usage: python benchmarks/latency_backends.py tiny.en base   (expects /tmp/m/NAME and /tmp/m/NAME-onnx)
# per-clip latency, PyTorch fp32 vs ORT fp32 vs ORT int8, same clips, one run
import statistics
import sys
import time

from mkdeploy.cli.common import quiet_libraries

quiet_libraries()
from mkdeploy.demo.synthesis import Voice, synthesize
from mkdeploy.evaluate import error_rates
from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber

sys.path.insert(0, "tests")
from conftest import SENTENCES

audios = [synthesize(t, Voice("piper", "joe")) for t in SENTENCES]
opts = TranscriptionOptions(batch_size=1, return_timestamps=False)
for name in sys.argv[1:]:
    models = {
        "torch fp32": (f"/tmp/m/{name}", "torch", None),
        "ort fp32": (f"/tmp/m/{name}-onnx", "onnx", None),
        "ort int8": (f"/tmp/m/{name}-onnx", "onnx", "int8"),
    }
    tr = {
        k: WhisperTranscriber.from_pretrained(p, backend=b, device="cpu", **({"variant": v} if v else {}))
        for k, (p, b, v) in models.items()
    }
    lat = {k: [] for k in tr}
    hyp = {k: [] for k in tr}
    toks = {k: [] for k in tr}
    for k in tr:
        tr[k].transcribe_arrays(audios[:1], opts)  # warm-up
    for a in audios:
        for rep in range(3):
            for k, t in tr.items():
                t0 = time.perf_counter()
                r = t.transcribe_arrays([a], opts)[0]
                lat[k].append(time.perf_counter() - t0)
                if rep == 0:
                    hyp[k].append(r.text)
                    toks[k].append(r.tokens)
    for k in tr:
        print(
            f"{name:8s} {k:10s} median {statistics.median(lat[k]):.3f} s/clip  WER {100 * error_rates(SENTENCES, hyp[k]).wer:.2f}%  tokens==torch {sum(a == b for a, b in zip(toks[k], toks['torch fp32']))}/{len(audios)}"
        )
