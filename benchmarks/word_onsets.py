"""How close word timestamps fall to known speech onsets (issue 28, Done-when 1).

Each clip joins 3 utterances, each synthesised on its own (the demo's voices, the project's everyday sentences), with
silences of known length between them (0.4-2.0 s, a 0.2-1.0 s lead), so every utterance's speech onset is
known to 10 ms (:func:`mkdeploy.demo.synthesis.join_utterances`). Noise at 20-30 dB SNR is added over the
whole clip so the pauses are not digital silence. Each model transcribes with ``word_timestamps=True``
(PyTorch fp32); the utterance's first timed word is compared with its onset
(:func:`mkdeploy.evaluate.utterance_onset_errors`).

    python benchmarks/word_onsets.py --clips 24 --models work/demo/models/tiny.en work/demo/models/base
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from unittest.mock import patch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import numpy as np
import soundfile as sf

from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.demo.augment import NOISE_ONLY, augment
from mkdeploy.demo.synthesis import Voice, join_utterances, synthesize
from mkdeploy.demo.text import everyday_sentences
from mkdeploy.evaluate import utterance_onset_errors
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber
from mkdeploy.version import version_string

RESULTS = Path(__file__).resolve().parent / "results"
VOICES = [
    Voice("piper", "joe"),
    Voice("festival", "cmu_us_slt_arctic_hts"),
    Voice("flite", "slt"),
    Voice("flite", "kal16"),
]
NOISE = NOISE_ONLY
TOLERANCE_S = 0.2


def build(workdir: Path, n: int, seed: int = 0) -> list[dict]:
    """``n`` joined clips: {audio, texts, onsets, voice}; cached in ``workdir``."""
    meta = workdir / "clips.json"
    if meta.exists():
        return json.loads(meta.read_text())
    rng = np.random.default_rng(seed)
    # the 73 everyday sentences (unseen-text test set), one per utterance: a clip of three is mostly under 30 s
    texts = [t for t in everyday_sentences() if 5 <= len(t.split()) <= 20]
    workdir.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):
        voice = VOICES[i % len(VOICES)]
        chosen = [texts[j] for j in rng.choice(len(texts), 3, replace=False)]
        audio, onsets = join_utterances(
            [synthesize(t, voice) for t in chosen], list(rng.uniform(0.4, 2.0, 2)), float(rng.uniform(0.2, 1.0))
        )
        path = workdir / f"joined-{i:03d}.wav"
        sf.write(path, augment(audio, [seed, i], NOISE), SAMPLE_RATE, subtype="PCM_16")
        clips.append({"audio": str(path), "texts": chosen, "onsets": onsets, "voice": f"{voice.engine}/{voice.name}"})
    meta.write_text(json.dumps(clips, indent=1))
    return clips


def measure(model: Path, clips: list[dict], snap: bool = True) -> dict:
    """One model's onset errors; ``snap=False`` measures DTW's times alone (the pause snapping off)."""
    tr = WhisperTranscriber.from_pretrained(model, device="cpu")
    opts = TranscriptionOptions(language="en", word_timestamps=True)
    with (
        patch("mkdeploy.transcription.alignment.snap_to_speech", side_effect=lambda w, *_: w)
        if not snap
        else nullcontext()
    ):
        res, _ = tr.transcribe_files([Path(c["audio"]) for c in clips], opts)
    by = {r.path: r for r in res}
    errors, monotonic, inside = [], True, True
    for c in clips:
        r = by[c["audio"]]
        errors += utterance_onset_errors(c["texts"], c["onsets"], r.words)
        times = [t for w in r.words for t in (w.start, w.end)]
        monotonic &= times == sorted(times)
        inside &= all(any(s.start - 0.5 <= w.start and w.end <= s.end + 0.5 for s in r.segments) for w in r.words)
    heard = np.array([e for e in errors if e is not None])
    return {
        "model": model.name,
        "times": "DTW + pause snapping" if snap else "DTW alone",
        "utterances": len(errors),
        "missed": sum(e is None for e in errors),
        "within_0.2s": float(np.mean(np.abs(heard) <= TOLERANCE_S) * len(heard) / len(errors)),
        "median_s": float(np.median(heard)),
        "p90_abs_s": float(np.quantile(np.abs(heard), 0.9)),
        "early_over_0.2s": int(np.sum(heard < -TOLERANCE_S)),
        "late_over_0.2s": int(np.sum(heard > TOLERANCE_S)),
        "monotonic": bool(monotonic),
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument(
        "--models", type=Path, nargs="+", default=[Path("work/demo/models/tiny.en"), Path("work/demo/models/base")]
    )
    ap.add_argument("--workdir", type=Path, default=Path("work/onsets"))
    ap.add_argument("--out", type=Path, default=RESULTS / "word_onsets.md")
    args = ap.parse_args()
    t0 = time.time()
    clips = build(args.workdir, args.clips)
    rows = [measure(m, clips, snap) for m in args.models for snap in (False, True)]
    for r in rows:
        print({k: v for k, v in r.items() if k != "errors"}, flush=True)
    cmd = f"python benchmarks/word_onsets.py --clips {args.clips}"
    lines = [
        "# Word timestamps against known onsets",
        "",
        f"{version_string()}; `{cmd}`; {len(clips)} clips of 3 utterances ({', '.join(f'{v.engine}/{v.name}' for v in VOICES)}), "
        f"noise 20-30 dB; PyTorch fp32, `word_timestamps=True`; {(time.time() - t0) / 60:.1f} min.",
        "",
        "| model | times | utterances | missed | first word within 0.2 s | median start − onset | p90 abs error | early > 0.2 s | late > 0.2 s | monotonic |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['times']} | {r['utterances']} | {r['missed']} | {100 * r['within_0.2s']:.1f}% | {r['median_s']:+.2f} s "
            f"| {r['p90_abs_s']:.2f} s | {r['early_over_0.2s']} | {r['late_over_0.2s']} | {r['monotonic']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
