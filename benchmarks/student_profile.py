"""Where a windowed student's time goes against tiny.en whole: features, encoder, decoder per clip.

Usage:
    python benchmarks/student_profile.py WORKDIR

WORKDIR is a finished `make demo` work directory. On the in-domain test clips, batch 1, 2 threads, ONNX int8:
the feature extractor and the encoder session alone (each clip in the student's window, 30 s for tiny.en),
then the whole transcription; "decoder and the rest" is the difference. Prints one line per model
(benchmarks/results/student_windows_selection.md holds a run).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import WhisperFeatureExtractor

from mkdeploy.audio import SAMPLE_RATE, load_audio
from mkdeploy.data import load_manifest
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


def main() -> None:
    w = Path(sys.argv[1] if len(sys.argv) > 1 else "work/demo")
    audios = [load_audio(r.audio) for r in load_manifest(w / "corpus" / "test_in_domain.jsonl")]
    fe = WhisperFeatureExtractor.from_pretrained(w / "models" / "tiny.en")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for name, d in (
        ("student", w / "models" / "tiny.en-windowed-distilled-onnx" / "int8"),
        ("tiny.en whole", w / "models" / "tiny.en-onnx" / "int8"),
    ):
        tr = WhisperTranscriber.from_pretrained(d, device="cpu", threads=2)
        windows = tr.windows(TranscriptionOptions())
        enc = ort.InferenceSession(str(d / "encoder_model.onnx"), so, providers=["CPUExecutionProvider"])
        t_feat = t_enc = 0.0
        for a in audios:
            s = windows.bucket_for(len(a) / SAMPLE_RATE)
            t0 = time.perf_counter()
            f = fe([a], sampling_rate=SAMPLE_RATE, return_tensors="np", padding="max_length",
                   max_length=s * SAMPLE_RATE, truncation=True).input_features  # fmt: skip
            t1 = time.perf_counter()
            enc.run(None, {"input_features": f})
            t_feat, t_enc = t_feat + t1 - t0, t_enc + time.perf_counter() - t1
        opts = TranscriptionOptions(language="en", return_timestamps=False, batch_size=1)
        tr.transcribe_arrays(audios[:1], opts)  # warm-up
        t0, tokens = time.perf_counter(), 0
        for a in audios:
            tokens += len(tr.transcribe_arrays([a], opts)[0].tokens) + 1  # + end of text
        total, n = time.perf_counter() - t0, len(audios)
        rest = total - t_feat - t_enc
        print(
            f"{name}: total {1000 * total / n:.0f} ms/clip; features {1000 * t_feat / n:.0f}; encoder "
            f"{1000 * t_enc / n:.0f}; decoder and the rest {1000 * rest / n:.0f}; tokens/clip {tokens / n:.1f}; "
            f"{1000 * rest / tokens:.2f} ms per token (durations {np.percentile([len(a) / SAMPLE_RATE for a in audios], [0, 50, 100])})"
        )


if __name__ == "__main__":
    main()
