"""Which augmentation step widens the teacher-student gap on the demo's kept voices (issue 26, item 1).

benchmarks/calibrate_corpus.py chose voices and noise bands; this script holds those fixed (the demo's two
voices at 20-30 dB SNR) and turns on one more step of the chain per condition (tempo, reverb, telephone band,
hum), or speaks faster, or joins more sentences per clip, so each condition's teacher and student WER
(PyTorch fp32, the demo's decoding) says where the student falls furthest behind a teacher that still hears.

    python benchmarks/calibrate_effects.py --workdir work/effects --per-voice 6
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import numpy as np

from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.demo.augment import NOISE_ONLY, AugmentSpec, augment
from mkdeploy.demo.calibrate import score_clips
from mkdeploy.demo.corpus import CorpusSpec, demo_corpus, split_texts
from mkdeploy.demo.synthesis import Voice, synthesize
from mkdeploy.stats import paired_bootstrap
from mkdeploy.version import version_string

RESULTS = Path(__file__).resolve().parent / "results"
QUIET = NOISE_ONLY
#: name -> (augmentation, rate range, sentences per clip)
CONDITIONS: dict[str, tuple[AugmentSpec, tuple[float, float], tuple[int, int]]] = {
    "noise only": (QUIET, (0.9, 1.1), (2, 3)),
    "+ tempo": (replace(QUIET, p_tempo=1.0), (0.9, 1.1), (2, 3)),
    "+ pitch": (replace(QUIET, p_pitch=1.0), (0.9, 1.1), (2, 3)),
    "+ reverb": (replace(QUIET, p_reverb=1.0), (0.9, 1.1), (2, 3)),
    "+ telephone": (replace(QUIET, p_telephone=1.0), (0.9, 1.1), (2, 3)),
    "+ hum": (replace(QUIET, p_hum=1.0), (0.9, 1.1), (2, 3)),
    "fast (rate 0.7-0.8)": (QUIET, (0.7, 0.8), (2, 3)),
    "long (5-7 sentences)": (QUIET, (0.9, 1.1), (5, 7)),
}
#: the second round: the one step the first round found to widen the gap (hum), on more clips and mixed
HUM = replace(QUIET, p_hum=1.0)
HUM_CONDITIONS: dict[str, tuple[AugmentSpec, tuple[float, float], tuple[int, int]]] = {
    "hum": (HUM, (0.9, 1.1), (2, 3)),
    "hum, no noise": (replace(HUM, p_noise=0.0), (0.9, 1.1), (2, 3)),
    "hum + fast (rate 0.75-0.9)": (HUM, (0.75, 0.9), (2, 3)),
    "hum + full chain": (AugmentSpec(p_hum=1.0, p_noise=1.0, snr_db=(20.0, 30.0)), (0.85, 1.2), (2, 3)),
}
ROUNDS = {"steps": CONDITIONS, "hum": HUM_CONDITIONS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("work/effects"))
    ap.add_argument("--models", type=Path, default=Path("work/demo/models"))
    ap.add_argument("--per-voice", type=int, default=6)
    ap.add_argument("--round", choices=sorted(ROUNDS), default="steps")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import soundfile as sf

    t0 = time.time()
    conditions = ROUNDS[args.round]
    out = args.out or RESULTS / f"corpus_effects_{args.round}"
    voices = [v.split("/") for v in demo_corpus().train_voices]
    pool = split_texts(CorpusSpec(plain_text=True, sentences_per_clip=(1, 1), n_train=240, train_pool=240))["train"]
    clips_dir = args.workdir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    plans, k, used = [], 0, 0
    for cond, (spec, rate, per_clip) in conditions.items():
        for engine, name in voices:
            for _ in range(args.per_voice):
                rng = np.random.default_rng([0, 11, len(args.round), k])
                n = int(rng.integers(per_clip[0], per_clip[1] + 1))
                text = " ".join(pool[(used + i) % len(pool)] for i in range(n))
                used += n
                plans.append(
                    dict(
                        id=f"{args.round}_{k:04d}",
                        cond=cond,
                        voice=f"{engine}/{name}",
                        text=text,
                        engine=engine,
                        name=name,
                        rate=float(rng.uniform(*rate)),
                        spec=spec,
                        seed=[0, 12, len(args.round), k],
                    )
                )
                k += 1

    def make(p):
        path = clips_dir / f"{p['id']}.wav"
        if not path.exists():
            audio = augment(synthesize(p["text"], Voice(p["engine"], p["name"], p["rate"])), p["seed"], p["spec"])
            sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        return path

    with ThreadPoolExecutor(2) as ex:
        paths = list(ex.map(make, plans))
    print(f"{len(plans)} clips in {time.time() - t0:.0f} s", flush=True)
    refs = [p["text"] for p in plans]
    errs, words = {}, []
    for model in ("base", "tiny.en"):
        t = time.time()
        scored = score_clips(args.models / model, paths, refs)
        errs[model], words = scored.word_errors, scored.ref_words
        print(f"{model}: {100 * scored.wer:.2f}% in {time.time() - t:.0f} s", flush=True)
    rows = []
    for cond in conditions:
        idx = [i for i, p in enumerate(plans) if p["cond"] == cond]
        w = sum(words[i] for i in idx)
        te, se = sum(errs["base"][i] for i in idx) / w, sum(errs["tiny.en"][i] for i in idx) / w
        d = paired_bootstrap([errs["tiny.en"][i] for i in idx], [errs["base"][i] for i in idx], [words[i] for i in idx])
        lo, hi = d.lo, d.hi
        rows.append(
            dict(
                condition=cond,
                clips=len(idx),
                words=w,
                teacher=te,
                student=se,
                ratio=se / max(te, 1e-9),
                gap_ci95=[lo, hi],
            )
        )
        print(
            f"{cond:22s} {len(idx):3d} clips {w:5d} words teacher {100 * te:5.2f} student {100 * se:5.2f} "
            f"ratio {se / max(te, 1e-9):.2f} gap CI [{100 * lo:+.2f}, {100 * hi:+.2f}]",
            flush=True,
        )
    meta = dict(
        version=version_string(),
        minutes=round((time.time() - t0) / 60, 1),
        command=f"python benchmarks/calibrate_effects.py --round {args.round} --per-voice {args.per_voice}",
    )
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")
    lines = [
        f"# Teacher-student gap by augmentation step ({args.round})",
        "",
        f"{meta['version']}; `{meta['command']}`; {len(plans)} clips, {meta['minutes']} min. Voices "
        + ", ".join(demo_corpus().train_voices)
        + "; coloured noise at 20-30 dB SNR unless said; PyTorch fp32, the demo's decoding.",
        "",
        "| condition | clips | words | teacher base | student tiny.en | ratio | student − teacher, 95% CI |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r['condition']} | {r['clips']} | {r['words']} | {100 * r['teacher']:.2f}% | {100 * r['student']:.2f}% "
        f"| {r['ratio']:.2f} | [{100 * r['gap_ci95'][0]:+.2f}, {100 * r['gap_ci95'][1]:+.2f}] |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
