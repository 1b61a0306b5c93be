"""int8 against fp32 on speech of our own that the demo never made: four espeak-ng accents absent from every
demo split (the unseen-speech test set's six voices included), reading the unseen-text test set's
sentences (never trained on). Issue 27's Done-when asks for the shipped int8 within +0.3 WER points of its
fp32 "on the demo's test sets and on held-out speech of your own"; this is the second half.

    .venv/bin/python benchmarks/int8_heldout.py work/demo --models tiny.en-3dec-distilled \\
        --schemes per-channel,weight-only-int8 --out benchmarks/results/int8_heldout.md

The clips are written once to WORKDIR/heldout-own (a manifest with references); PyTorch fp32 is the
model's own folder, each scheme's export WORKDIR/int8-schemes/<model>/<scheme> (benchmarks/int8_speed.py
or int8_schemes.py writes them). Differences carry a 95% paired bootstrap interval over clips.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mkdeploy.constants import SAMPLE_RATE

#: espeak-ng voices in no demo split (mkdeploy.demo.synthesis.UNSEEN_VOICES has six others)
VOICES = ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")


def build(workdir: Path, clips: int) -> Path:
    """WORKDIR/heldout-own/manifest.jsonl: ``clips`` utterances, the voices in turn (written once)."""
    import soundfile as sf

    from mkdeploy.data import load_manifest
    from mkdeploy.demo.synthesis import UNSEEN_VOICES, Voice, synthesize
    from mkdeploy.fsutil import atomic_write_text

    out = workdir / "heldout-own"
    manifest = out / "manifest.jsonl"
    if manifest.exists():
        return manifest
    assert not set(VOICES) & {v for vs in UNSEEN_VOICES.values() for v in vs}
    texts = [u.text for u in load_manifest(workdir / "corpus" / "test_unseen_text.jsonl", require_text=True)][:clips]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(texts):
        voice = VOICES[i % len(VOICES)]
        audio = synthesize(text, Voice("espeak-ng", voice))
        name = f"{i:03d}_{voice}.wav"
        sf.write(out / name, audio, SAMPLE_RATE)
        rows.append(json.dumps({"audio": name, "text": text, "engine": "espeak-ng", "voice": voice}))
    atomic_write_text(manifest, "\n".join(rows) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--models", default="tiny.en-3dec-distilled")
    ap.add_argument("--schemes", default="per-channel,weight-only-int8")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.demo.scoring import score
    from mkdeploy.stats import paired_bootstrap

    w = a.workdir
    manifest = build(w, a.clips)
    cache = w / "heldout-own" / "scores"
    words = sum(len(json.loads(line)["text"].split()) for line in manifest.read_text().splitlines())
    lines = [
        "# int8 against fp32 on held-out speech of our own",
        "",
        f"`python benchmarks/int8_heldout.py {w} --models {a.models} --schemes {a.schemes}`: {a.clips} clips "
        f"({words} words), espeak-ng voices {', '.join(VOICES)} (in no demo split), the unseen-text test set's "
        "sentences. WER %, and int8 − fp32 in points with a 95% paired bootstrap interval over clips.",
        "",
        "| model | fp32 (PyTorch) | " + " | ".join(a.schemes.split(",")) + " |",
        "|---|--:|" + "--:|" * len(a.schemes.split(",")),
    ]
    record = {}
    for model in a.models.split(","):
        fp32 = score(w / "models" / model, manifest, cache / f"{model}.fp32.json")
        cells, record[model] = [], {"fp32": fp32["wer"]}
        for scheme in a.schemes.split(","):
            r = score(w / "int8-schemes" / model / scheme, manifest, cache / f"{model}.{scheme}.json")
            d = paired_bootstrap(r["word_errors"], fp32["word_errors"], fp32["ref_words"])
            record[model][scheme] = {"wer": r["wer"], "difference": d.to_dict()}
            cells.append(f"{100 * r['wer']:.2f} ({100 * d.delta:+.2f} [{100 * d.lo:+.2f}, {100 * d.hi:+.2f}])")
        lines.append(f"| {model} | {100 * fp32['wer']:.2f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
