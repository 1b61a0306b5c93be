"""Resident memory of the torch-free runtime step by step in one process: the interpreter, numpy, ONNX Runtime,
tokenizers, mkdeploy.lean, the loaded export, its first transcript and three more
(benchmarks/results/lean_runtime_cpu.md).

    python benchmarks/lean_memory_steps.py EXPORT_DIR [ORT_FLAGS]   # e.g. work/demo/models/tiny.en-onnx/int8 no-arena
"""

from __future__ import annotations

import sys

import psutil


def rss() -> int:
    return round(psutil.Process().memory_info().rss / 1e6)


def main() -> None:
    print("python", rss())
    import numpy as np

    print("numpy", rss())
    import onnxruntime  # noqa: F401

    print("onnxruntime", rss())
    import tokenizers  # noqa: F401

    print("tokenizers", rss())
    from mkdeploy.lean.sessions import OrtOptions
    from mkdeploy.lean.transcriber import OnnxTranscriber
    from mkdeploy.options import scoring_options

    print("mkdeploy.lean", rss(), [m for m in ("torch", "transformers", "optimum") if m in sys.modules])
    flags = sys.argv[2] if len(sys.argv) > 2 else ""
    tr = OnnxTranscriber.from_pretrained(sys.argv[1], "cpu", 2, options=OrtOptions.from_memory_flags(flags, 2))
    print("loaded", rss())
    audio = (np.random.default_rng(0).standard_normal(16000 * 5) * 0.1).astype(np.float32)
    tr.transcribe_arrays([audio], scoring_options(batch_size=1))
    print("first transcript", rss())
    for _ in range(3):
        tr.transcribe_arrays([audio], scoring_options(batch_size=1))
    print("three more", rss())


if __name__ == "__main__":
    main()
