"""Per-clip latency of PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8 on four synthesised sentences,
one run (docs/findings.md, "int8 decoders no longer dequantise the embedding every step").

Usage::

    python benchmarks/latency_backends.py work/demo/models/tiny.en work/demo/models/base

Each MODEL is a PyTorch directory with its ONNX export beside it as MODEL-onnx (what `mkd demo` writes).
"""

import argparse
import statistics
import time

from mkdeploy.cli.common import quiet_libraries
from mkdeploy.demo.synthesis import Voice, synthesize
from mkdeploy.evaluate import error_rates
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "She sells sea shells by the sea shore every summer morning.",
    "A small model can be fast and cheap to serve to many users.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="PyTorch model directories, each with MODEL-onnx beside it")
    a = ap.parse_args()
    quiet_libraries()
    audios = [synthesize(t, Voice("piper", "joe")) for t in SENTENCES]
    opts = TranscriptionOptions(batch_size=1, return_timestamps=False)
    for path in a.models:
        models = {
            "torch fp32": (path, "torch", None),
            "ort fp32": (f"{path.rstrip('/')}-onnx", "onnx", None),
            "ort int8": (f"{path.rstrip('/')}-onnx", "onnx", "int8"),
        }
        tr = {
            k: WhisperTranscriber.from_pretrained(p, backend=b, device="cpu", **({"variant": v} if v else {}))
            for k, (p, b, v) in models.items()
        }
        lat: dict[str, list[float]] = {k: [] for k in tr}
        hyp: dict[str, list[str]] = {k: [] for k in tr}
        toks: dict[str, list] = {k: [] for k in tr}
        for t in tr.values():
            t.transcribe_arrays(audios[:1], opts)  # warm-up
        for audio in audios:
            for rep in range(3):
                for k, t in tr.items():
                    t0 = time.perf_counter()
                    r = t.transcribe_arrays([audio], opts)[0]
                    lat[k].append(time.perf_counter() - t0)
                    if rep == 0:
                        hyp[k].append(r.text)
                        toks[k].append(r.tokens)
        for k in tr:
            same = sum(x == y for x, y in zip(toks[k], toks["torch fp32"]))
            print(
                f"{path} {k:10s} median {statistics.median(lat[k]):.3f} s/clip  "
                f"WER {100 * error_rates(SENTENCES, hyp[k]).wer:.2f}%  tokens==torch {same}/{len(audios)}"
            )


if __name__ == "__main__":
    main()
