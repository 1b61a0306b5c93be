"""Batched long-form against the sequential window walk on one long file (WER and wall time, one run).

    .venv/bin/python benchmarks/longform.py --corpus work/demo/corpus --minutes 5 \
        work/demo/models/tiny.en work/demo/models/base

The long file is the demo's unseen-text test clips (the project's everyday sentences, Piper and festival
voices, 20-30 dB noise) joined with 0.8 s pauses in manifest order until ``--minutes``; its reference is
their transcripts joined. Each model transcribes it twice in one process: Whisper's
sequential long-form (``generate`` seeking window by window, timestamps on) and ``batched_long_form``
(pieces cut at Silero VAD pauses, batch 8). Prints a markdown table; figures are this machine's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--corpus", type=Path, default=Path("work/demo/corpus"))
    ap.add_argument("--split", default="test_unseen_text")
    ap.add_argument("--minutes", type=float, default=5.0)
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.audio import SAMPLE_RATE, load_audio
    from mkdeploy.data import load_manifest
    from mkdeploy.evaluate import error_rates
    from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber
    from mkdeploy.version import version_string

    pause = np.zeros(int(0.8 * SAMPLE_RATE), np.float32)
    parts, refs = [], []
    for u in load_manifest(a.corpus / f"{a.split}.jsonl", require_text=True):
        parts += [load_audio(u.audio), pause]
        refs.append(u.text or "")
        if sum(map(len, parts)) >= a.minutes * 60 * SAMPLE_RATE:
            break
    audio, ref = np.concatenate(parts), " ".join(refs)
    seconds = len(audio) / SAMPLE_RATE
    rows = []
    for model in a.models:
        tr = WhisperTranscriber.from_pretrained(model, device="cpu")
        tr.transcribe_arrays([audio[: 5 * SAMPLE_RATE]], TranscriptionOptions(language="en"))  # warm-up
        res = {}
        for mode in ("sequential", "batched"):
            opts = TranscriptionOptions(language="en", batched_long_form=mode == "batched")
            t = time.perf_counter()
            out = tr.transcribe_arrays([audio], opts)[0]
            res[mode] = (time.perf_counter() - t, error_rates([ref], [out.text]).wer, len(out.segments))
        (ts, ws, ns), (tb, wb, nb) = res["sequential"], res["batched"]
        rows.append(
            f"| {model.name} | {100 * ws:.2f} | {100 * wb:.2f} | {ts:.1f} | {tb:.1f} | {ts / tb:.2f}x | {ns} / {nb} |"
        )
        print(rows[-1], flush=True)
    print(
        f"\n# Batched long-form vs sequential windows ({version_string()})\n\n"
        f"`python benchmarks/longform.py --corpus {a.corpus} --minutes {a.minutes:g} "
        f"{' '.join(map(str, a.models))}`; one file of {seconds / 60:.1f} min ({len(refs)} clips of {a.split}, "
        f"{len(ref.split())} reference words), PyTorch fp32 on the CPU, greedy, language en; batched: batch 8.\n\n"
        "| model | WER sequential % | WER batched % | s sequential | s batched | speed-up | segments seq / batched |\n"
        "|---|--:|--:|--:|--:|--:|--:|\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
