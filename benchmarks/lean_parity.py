"""Token parity of the torch-free runtime with the full install's ONNX engine on real exports
(benchmarks/results/lean_runtime_cpu.md): the same clips through both, greedy without timestamps (what the
scores use) and with timestamps (mkd transcribe's default), each clip alone and in batches of 8.

    python benchmarks/lean_parity.py work/demo/corpus/test_in_domain.jsonl EXPORT_DIR [EXPORT_DIR ...]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from mkdeploy.audio import load_audio
from mkdeploy.data import load_manifest
from mkdeploy.lean.transcriber import OnnxTranscriber
from mkdeploy.options import TranscriptionOptions, scoring_options
from mkdeploy.transcription.runtime import WhisperTranscriber


def _within_a_step(s, r, duration: float) -> bool:
    """Start and end within 0.02 s; ``generate`` lets a last segment end past the audio, where the lean
    runtime stops it at the audio's end (tests/test_lean.py allows the same)."""
    end_ok = abs(s.end - r.end) <= 0.0201 or (r.end > duration and s.end == round(duration, 2))
    return abs(s.start - r.start) <= 0.0201 and end_ok


def main() -> None:
    rows = load_manifest(Path(sys.argv[1]))
    audios = [load_audio(r.audio) for r in rows]
    print("| export | decoding | batch | same tokens | timestamps within 0.02 s |")
    print("|---|---|--:|--:|--:|")
    for path in sys.argv[2:]:
        lean = OnnxTranscriber.from_pretrained(path, "cpu", 2)
        full = WhisperTranscriber.from_pretrained(path, "onnx", "cpu", 2)
        for label, base in (("greedy", scoring_options()), ("timestamps", TranscriptionOptions(language="en"))):
            for batch in (1, 8):
                opts = replace(base, batch_size=batch)
                a, b = lean.transcribe_arrays(audios, opts), full.transcribe_arrays(audios, opts)
                same = sum(x.tokens == y.tokens for x, y in zip(a, b))
                close = sum(
                    len(x.segments) == len(y.segments)
                    and all(_within_a_step(s, r, x.duration) for s, r in zip(x.segments, y.segments))
                    for x, y in zip(a, b)
                )
                stamps = f"{close}/{len(a)}" if label == "timestamps" else ""
                print(f"| {path} | {label} | {batch} | {same}/{len(a)} | {stamps} |", flush=True)


if __name__ == "__main__":
    main()
