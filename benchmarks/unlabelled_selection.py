"""Can unlabelled in-domain audio choose what a run ships? Checkpoints scored against the teacher's
transcripts on a larger held-out split, beside the 24-clip dev split with references.

The demo's selection reads 24 dev clips with references; on the encoder-LoRA runs of
benchmarks/results/issue26_encoder_seeds.md it shipped the untrained student every seed although every seed's
last step was better on the in-domain test set. A user rarely has many transcribed clips, but usually has
more untranscribed audio of the same kind. This script makes such a split (SELECT: the training voices,
augmentation and text source, texts disjoint from every demo split), labels it with the teacher, and
scores each run's checkpoints on it against those labels (the references are read only to report how
good the proxy is). Selection is mkdeploy/distill/select.py's `choose` with the trainer's defaults
(confidence 0.9, one-standard-error rule). The test sets are read only for what each choice ships.

    .venv/bin/python benchmarks/unlabelled_selection.py --from-demo work/demo --runs work/abl-enc4/runs \\
        --workdir work/sel --clips 96 --out benchmarks/results/issue26_unlabelled_selection.md

PyTorch fp32, the demo's decoding (mkdeploy/demo/report.py DECODING). ~15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

#: where the selection split's sentences start in the corpus's shuffled fortune pool: past every demo split
#: (they use the first ~700); disjointness is also checked sentence by sentence
POOL_START = 1500


def select_split(demo: Path, out: Path, n: int) -> Path:
    """Synthesise ``n`` clips like the training split's (voices, rate, augmentation) from unused fortunes."""
    from mkdeploy.demo import corpus as C
    from mkdeploy.fsutil import atomic_write_text

    spec = C.demo_corpus()
    stamp = json.loads((demo / "corpus" / "corpus.json").read_text())
    if stamp != json.loads(json.dumps(asdict(spec))):
        raise SystemExit(f"{demo}/corpus was built from another spec than demo_corpus(); rebuild it")
    used = " ".join(" ".join(v) for v in C.split_texts(spec).values())
    prose = C.plain_fortunes()
    np.random.default_rng([spec.seed, 1]).shuffle(prose)
    pool = [s for s in prose[POOL_START:] if s not in used]
    counts = np.random.default_rng([spec.seed, 77]).integers(
        spec.sentences_per_clip[0], spec.sentences_per_clip[1] + 1, n
    )
    out.mkdir(parents=True, exist_ok=True)
    rows, pos = [], 0
    for i, c in enumerate(counts):
        text = " ".join(pool[pos : pos + c])
        pos += c
        # the training split's draw of voice, rate and augmentation, at indices no training clip has
        plan = C.clip_plan(spec, "train", 10_000 + i, text)
        plan["id"] = f"select_{i:04d}"
        C._make_clip(plan, out / f"{plan['id']}.wav", spec)
        rows.append(
            {
                "id": plan["id"],
                "audio": f"{out.name}/{plan['id']}.wav",
                "text": text,
                "engine": plan["engine"],
                "voice": plan["voice"],
            }
        )
    return atomic_write_text(out.parent / "select.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def transcribe(model: Path, manifest: Path, cache: Path) -> list[str]:
    from mkdeploy.data import load_manifest
    from mkdeploy.fsutil import atomic_write_text
    from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

    if cache.exists():
        return json.loads(cache.read_text())
    utts = load_manifest(manifest)
    tr = WhisperTranscriber.from_pretrained(model, device="cpu")
    res, failures = tr.transcribe_files(
        [u.audio for u in utts], TranscriptionOptions(language="en", return_timestamps=False)
    )
    if failures:
        raise SystemExit(f"{model}: {len(failures)} clips failed, e.g. {failures[0].reason}")
    by = {t.path: t.text for t in res}
    hyps = [by.get(str(u.audio), "") for u in utts]
    atomic_write_text(cache, json.dumps(hyps) + "\n")
    return hyps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-demo", type=Path, required=True)
    ap.add_argument("--runs", type=Path, required=True, help="folder of `mkd train` run directories")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--candidates", default="step-000020@1.0,step-000040@0.5,step-000040@1.0")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.data import load_manifest
    from mkdeploy.demo.corpus import SPLITS, TEST_SPLITS, Corpus
    from mkdeploy.demo.scoring import score_model
    from mkdeploy.distill.merge import merge_run
    from mkdeploy.distill.select import Candidate, choose
    from mkdeploy.evaluate import error_rates
    from mkdeploy.stats import paired_bootstrap

    t0 = time.time()
    demo, w = a.from_demo, a.workdir
    manifest = select_split(demo, w / "select", a.clips)
    refs = [u.text or "" for u in load_manifest(manifest)]
    teacher = transcribe(demo / "models" / "base", manifest, w / "hyps" / "teacher.json")
    teacher_wer = error_rates(refs, teacher).wer
    print(
        f"select split: {len(refs)} clips, {sum(len(r.split()) for r in refs)} words; teacher WER {100 * teacher_wer:.2f}%",
        flush=True,
    )
    corpus = Corpus(demo / "corpus", {s: demo / "corpus" / f"{s}.jsonl" for s in SPLITS})

    def scored(hyps):
        vs_t, vs_r = error_rates(teacher, hyps), error_rates(refs, hyps)
        return vs_t, vs_r

    start_dir = demo / "models" / "tiny.en"
    start_hyps = transcribe(start_dir, manifest, w / "hyps" / "untrained.json")
    start_t, start_r = scored(start_hyps)
    start_test = score_model(start_dir, corpus, w / "scores", "untrained")
    report = {
        "teacher_wer_select": teacher_wer,
        "untrained": {"vs_teacher": start_t.wer, "vs_refs": start_r.wer},
        "runs": {},
    }
    for run in sorted(p for p in a.runs.iterdir() if (p / "checkpoints").is_dir()):
        dev = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines() if x.strip()]
        dev_start = next(d for d in dev if d["step"] == 0)
        cands_t = [Candidate(0, 0.0, start_t.wer, "", [u.word_errors for u in start_t.utterances])]
        info = {}
        for spec in a.candidates.split(","):
            ck, alpha = spec.split("@")
            out = w / "candidates" / f"{run.name}-{ck}-{alpha}"
            if not (out / "merged" / "config.json").exists():
                merge_run(run, out / "merged", force=True, checkpoint=run / "checkpoints" / ck, alpha=float(alpha))
            hyps = transcribe(out / "merged", manifest, w / "hyps" / f"{run.name}-{ck}-{alpha}.json")
            vs_t, vs_r = scored(hyps)
            step = int(ck.split("-")[1])
            cands_t.append(Candidate(step, float(alpha), vs_t.wer, ck, [u.word_errors for u in vs_t.utterances]))
            words = [u.ref_words for u in start_r.utterances]
            diff = {
                "vs_refs": paired_bootstrap(
                    [u.word_errors for u in vs_r.utterances], [u.word_errors for u in start_r.utterances], words
                ),
                "vs_teacher": paired_bootstrap(
                    [u.word_errors for u in vs_t.utterances],
                    [u.word_errors for u in start_t.utterances],
                    [u.ref_words for u in start_t.utterances],
                ),
            }
            info[spec] = {
                "vs_teacher": vs_t.wer,
                "vs_refs": vs_r.wer,
                "dir": str(out / "merged"),
                "ci95_minus_untrained": {k: [d.delta, d.lo, d.hi] for k, d in diff.items()},
            }
            print(
                f"{run.name} {spec}: vs teacher {100 * vs_t.wer:.2f}% (untrained {100 * start_t.wer:.2f}), vs refs {100 * vs_r.wer:.2f}% (untrained {100 * start_r.wer:.2f})",
                flush=True,
            )
        chosen = choose(cands_t, confidence=0.9, within_se=1.0)
        key = "untrained" if chosen.step == 0 else f"{chosen.checkpoint}@{chosen.alpha:.1f}"
        sel = json.loads((run / "selection.json").read_text())["chosen"]
        dev_key = "untrained" if sel["step"] == 0 else f"{sel['checkpoint']}@{sel['alpha']:.1f}"
        test = {}
        for name, model_dir in [("untrained", start_dir)] + [(k, Path(v["dir"])) for k, v in info.items()]:
            if name == key or name == "untrained":
                scores = (
                    start_test
                    if name == "untrained"
                    else score_model(model_dir, corpus, w / "scores", f"{run.name}-{name}")
                )
                test[name] = {s: scores[s]["wer"] for s in TEST_SPLITS}
        report["runs"][run.name] = {
            "candidates": info,
            "chosen_by_select_vs_teacher": key,
            "chosen_by_dev_refs": dev_key,
            "dev_untrained_wer": dev_start["wer"],
            "test_of_choice": test,
        }
        print(
            f"{run.name}: select split ships {key}; dev (24 clips, references) shipped {dev_key}; test {json.dumps({k: {s: round(100 * x, 2) for s, x in v.items()} for k, v in test.items()})}",
            flush=True,
        )
    report["minutes"] = round((time.time() - t0) / 60, 1)
    (w / "selection.json").write_text(json.dumps(report, indent=1) + "\n")
    if a.out:
        a.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"done in {report['minutes']} min", flush=True)


if __name__ == "__main__":
    main()
