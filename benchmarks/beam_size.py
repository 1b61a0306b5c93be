"""What `--beam-size` costs and buys on the demo's three test sets (issue 46 item 2).

Usage:
    python benchmarks/beam_size.py WORKDIR [--models tiny.en,tiny.en-windowed-distilled] [--beams 1,5]
        [--out benchmarks/results/beam_size.md]

WORKDIR is a finished `make demo` work directory (work/demo). Each model (a folder under WORKDIR/models, PyTorch
fp32) transcribes every clip of the three test sets with each beam size, batch 8, the demo's decoding otherwise
(language en, no timestamps); the table gives WER per set and seconds per clip, one run, one machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mkdeploy.bench import environment
from mkdeploy.data import load_manifest
from mkdeploy.demo.corpus import TEST_SPLITS
from mkdeploy.demo.report import TITLES
from mkdeploy.evaluate import error_rates
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--models", default="tiny.en,tiny.en-windowed-distilled")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    beams = [int(b) for b in a.beams.split(",")]
    rows = []
    for name in a.models.split(","):
        tr = WhisperTranscriber.from_pretrained(a.workdir / "models" / name, device="cpu")
        for k in beams:
            opts = TranscriptionOptions(language="en", return_timestamps=False, batch_size=8, num_beams=k)
            wers, seconds, clips = {}, 0.0, 0
            for split in TEST_SPLITS:
                utts = load_manifest(a.workdir / "corpus" / f"{split}.jsonl", require_text=True)
                t0 = time.perf_counter()
                res, _ = tr.transcribe_files([u.audio for u in utts], opts)
                seconds += time.perf_counter() - t0
                clips += len(utts)
                by = {r.path: r.text for r in res}
                wers[split] = error_rates([u.text or "" for u in utts], [by.get(str(u.audio), "") for u in utts]).wer
            rows.append((name, k, wers, 1000 * seconds / clips))
            print(rows[-1], flush=True)

    env = environment("cpu")
    lines = [
        "# Beam search against greedy on the demo's test sets",
        "",
        f"Command: `python benchmarks/beam_size.py {a.workdir} --models {a.models} --beams {a.beams}`",
        "",
        f"Machine: {env['cpu']} ({env['cpu_isa']}), {env['cpu_count']} cores; commit {env['commit']}. PyTorch fp32, "
        "batch 8, language en, no timestamps; ms per clip over all three sets.",
        "",
        "| model | beams | " + " | ".join(TITLES[s] for s in TEST_SPLITS) + " | ms per clip |",
        "|---|--:|" + "--:|" * len(TEST_SPLITS) + "--:|",
    ]
    for name, k, wers, ms in rows:
        lines.append(f"| {name} | {k} | " + " | ".join(f"{100 * wers[s]:.2f}%" for s in TEST_SPLITS) + f" | {ms:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
