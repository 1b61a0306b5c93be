"""The demo's figures: headline.json (a schema a script can check) and REPORT.md (what a reader checks).

Six scored configurations: teacher, untrained and distilled student, each in PyTorch fp32 (the model's
quality) and ONNX int8 (what ships), with one decoding configuration for all (:data:`DECODING`). Every
difference called a gain carries a paired-bootstrap 95% interval over the test clips (:mod:`mkdeploy.stats`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from mkdeploy.demo.corpus import SETS, TITLES, manifest_rows
from mkdeploy.demo.pareto import pareto_table, shipped_verdicts
from mkdeploy.stats import gap_closed, paired_bootstrap, pct

#: the test sets by their headline names
MODELS = ("teacher", "untrained", "distilled")
ENGINES = ("fp32", "int8")
#: how every model is decoded for the report (the transcriber's defaults, written out)
DECODING = (
    "language en (the corpus is English: no detection), greedy, batch 8, each model's own encoder windows "
    "(30 s unless it carries buckets), no timestamps, the "
    "no-speech gate on, temperature fallback (seeded) only for outputs whose token-byte compression ratio "
    "exceeds 1.35 (a loop); WER on Whisper's English normaliser"
)


@dataclass
class SetFigures:
    """One test set's WERs (fractions) and intervals (``[lo, hi]``, fractions)."""

    teacher_fp32: float
    untrained_fp32: float
    distilled_fp32: float
    teacher_int8: float
    untrained_int8: float
    distilled_int8: float
    ci95_distilled_minus_untrained_fp32: list[float]
    ci95_distilled_minus_untrained_int8: list[float]
    ci95_distilled_minus_teacher_fp32: list[float]
    #: share of the teacher gap (fp32) the distilled student closes; None without a gap
    gap_closed_fp32: float | None
    ref_words: int
    clips: int
    by_engine_fp32: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the model the student was made from, as it was (fp32), and distilled − it; None when not scored
    source_fp32: float | None = None
    ci95_distilled_minus_source_fp32: list[float] | None = None


def set_figures(scores: dict[str, dict]) -> SetFigures:
    """``scores``: by configuration (``teacher_fp32``, ..., and ``source_fp32`` for a pruned student), the
    score dict of one test set (with its per-clip ``word_errors`` and ``ref_words``)."""

    def ci(a: str, b: str) -> list[float]:
        d = paired_bootstrap(scores[a]["word_errors"], scores[b]["word_errors"], scores[a]["ref_words"])
        return [round(d.lo, 6), round(d.hi, 6)]

    wer = {k: v["wer"] for k, v in scores.items()}
    engines = sorted({e for m in MODELS for e in scores[f"{m}_fp32"].get("by_engine", {})})
    return SetFigures(
        **{f"{m}_{e}": wer[f"{m}_{e}"] for m in MODELS for e in ENGINES},
        ci95_distilled_minus_untrained_fp32=ci("distilled_fp32", "untrained_fp32"),
        ci95_distilled_minus_untrained_int8=ci("distilled_int8", "untrained_int8"),
        ci95_distilled_minus_teacher_fp32=ci("distilled_fp32", "teacher_fp32"),
        gap_closed_fp32=gap_closed(wer["teacher_fp32"], wer["untrained_fp32"], wer["distilled_fp32"]),
        ref_words=int(sum(scores["teacher_fp32"]["ref_words"])),
        clips=len(scores["teacher_fp32"]["ref_words"]),
        by_engine_fp32={
            e: {m: scores[f"{m}_fp32"]["by_engine"].get(e, {}).get("wer") for m in MODELS} for e in engines
        },
        source_fp32=wer.get("source_fp32"),
        ci95_distilled_minus_source_fp32=ci("distilled_fp32", "source_fp32") if "source_fp32" in scores else None,
    )


@dataclass
class Headline:
    """headline.json: per test set (:class:`SetFigures`) and, at the top level, what ran and how fast."""

    in_domain: SetFigures
    unseen_text: SetFigures
    unseen_speech: SetFigures
    minutes: float
    commit: str | None
    version: str
    #: batch-1 median latency per clip, by the bench's model names
    latency_p50_ms: dict[str, float]
    selected: dict
    trainable_pct: float
    labels: str
    #: what the student is, in words (the report's rows call it "student")
    student: str = "tiny.en"
    decoding: str = DECODING
    report: str = ""
    #: the frontier: one :class:`ParetoPoint` (as a dict) per benched configuration
    pareto: list[dict] = field(default_factory=list)

    def sets(self) -> dict[str, SetFigures]:
        return {split: getattr(self, name) for split, name in SETS.items()}

    def to_dict(self) -> dict:
        return asdict(self)


def _pts(ci: list[float]) -> str:
    return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def wer_table(head: Headline) -> list[str]:
    """WER by test set: six rows (model × engine), then the differences with their intervals."""
    sets = head.sets()
    lines = [
        "| model | engine | "
        + " | ".join(f"{TITLES[s]} ({f.clips} clips, {f.ref_words} words)" for s, f in sets.items())
        + " |",
        "|---|---|" + "--:|" * len(sets),
    ]
    names = {
        "teacher": "teacher base",
        "untrained": "student untrained (its windows, no training)",
        "distilled": "student distilled",
    }
    pruned = any(f.source_fp32 is not None for f in sets.values())
    for e, engine in (("fp32", "PyTorch fp32"), ("int8", "ONNX int8")):
        for m in MODELS:
            cells = [pct(getattr(f, f"{m}_{e}")) for f in sets.values()]
            if m == "distilled":
                cells = [f"**{c}**" for c in cells]
            lines.append(f"| {names[m]} | {engine} | " + " | ".join(cells) + " |")
        if e == "fp32" and pruned:
            cells = [pct(f.source_fp32) for f in sets.values()]
            lines.append(
                "| tiny.en whole, 30 s window (what the student was made from, untrained) | PyTorch fp32 | "
                + " | ".join(cells)
                + " |"
            )
    lines += [
        "",
        "Differences in WER points, paired bootstrap 95% interval over the clips (negative: the first is better):",
        "",
        "| difference | " + " | ".join(TITLES[s] for s in sets) + " |",
        "|---|" + "--:|" * len(sets),
    ]
    for label, key, a, b in (
        ("distilled − untrained, fp32", "ci95_distilled_minus_untrained_fp32", "distilled_fp32", "untrained_fp32"),
        ("distilled − untrained, int8", "ci95_distilled_minus_untrained_int8", "distilled_int8", "untrained_int8"),
        ("distilled − teacher, fp32", "ci95_distilled_minus_teacher_fp32", "distilled_fp32", "teacher_fp32"),
    ):
        lines.append(
            f"| {label} | "
            + " | ".join(f"{100 * (getattr(f, a) - getattr(f, b)):+.2f} {_pts(getattr(f, key))}" for f in sets.values())
            + " |"
        )
    if pruned:
        lines.append(
            "| distilled − tiny.en whole, fp32 | "
            + " | ".join(
                f"{100 * (f.distilled_fp32 - (f.source_fp32 or 0)):+.2f} {_pts(f.ci95_distilled_minus_source_fp32 or [0, 0])}"
                for f in sets.values()
            )
            + " |"
        )
    lines.append(
        "| share of the teacher gap closed, fp32 | "
        + " | ".join("n/a" if f.gap_closed_fp32 is None else f"{100 * f.gap_closed_fp32:.0f}%" for f in sets.values())
        + " |"
    )
    return lines


def verdicts(head: Headline) -> list[str]:
    """What the intervals support, one line per test set (the README states only these)."""
    out = []
    for split, f in head.sets().items():
        lo, hi = f.ci95_distilled_minus_untrained_fp32
        if f.distilled_fp32 == f.untrained_fp32 and lo == hi == 0:
            what = "the distilled student transcribes every clip as the untrained one (nothing was merged)"
        elif hi < 0:
            what = "distillation lowers fp32 WER (interval below 0)"
        elif lo > 0:
            what = "distillation raises fp32 WER (interval above 0)"
        else:
            what = "no fp32 difference resolvable (interval spans 0)"
        out.append(f"- {TITLES[split]}: {what}; upper bound {100 * hi:+.2f} points.")
    return out


#: the configuration the demo ships (its point is named on the plot)
def report_lines(
    opts, corpus, info, summary, head: Headline, bench_md: str, timings, min_avg_logprob: float | None, int8_scheme: str
) -> list[str]:
    """REPORT.md's lines: what was trained on what, the WER table with its verdicts, what was merged, the
    frontier, latency and stage times."""
    sel = head.selected
    spec = opts.corpus
    voices = ", ".join(spec.train_voices) or "every training voice"
    labels = (
        "the teacher's greedy transcripts (no reference read for training), kept where its mean token "
        f"log-probability is at least {min_avg_logprob} and the transcript is no repetition loop"
        if opts.labels == "pseudo"
        else "the corpus's transcripts, clips the teacher misses by more than 30% along them dropped"
    )
    return [
        "# mkdeploy demo report",
        "",
        f"{head.version} · {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC · {head.minutes:.1f} min",
        "",
        f"Teacher: Whisper base ({info['parameters']['teacher'] / 1e6:.1f}M params) · student: {head.student} "
        f"({info['parameters']['student'] / 1e6:.1f}M) · recipe {opts.recipe}, {opts.steps} steps of {opts.batch_size} "
        f"clips · trainable {head.trainable_pct:.2f}% of the teacher · {info['data']['kept']} training clips kept "
        f"({info['data']['dropped']} dropped by the label filter).",
        "",
        f"Training speech: plain Debian fortunes ({spec.sentences_per_clip[0]}-{spec.sentences_per_clip[1]} per clip) "
        f"spoken by {voices}, augmented (tempo, pitch, reverb, telephone band, hum; coloured noise at "
        f"{spec.augment.snr_db[0]:g}-{spec.augment.snr_db[1]:g} dB SNR on {100 * spec.augment.p_noise:.0f}% of clips): the voices and "
        "noise band benchmarks/results/corpus_calibration.md kept. "
        f"Labels: {labels}; KD on the teacher's distributions along them (τ = {info['recipe']['tau_kd']:g}); LoRA on "
        + (
            f"the decoder and the top {n} encoder layers. "
            if (n := info["recipe"]["encoder_lora_layers"])
            else "the decoder, the encoder frozen. "
        )
        + "No test clip, text or voice chooses anything: "
        f"the checkpoint is chosen on the {len(manifest_rows(corpus['dev']))}-clip dev split (with references).",
        "",
        f"Decoding, the same for every model: {head.decoding}.",
        "",
        "## Word error rate on speech never trained on",
        "",
        *wer_table(head),
        "",
        "What the intervals support:",
        "",
        *verdicts(head),
        "",
        "- in-domain: new fortunes, the training voices; unseen text: the project's everyday sentences (all 73 "
        "of them: that set cannot be larger); unseen speech: espeak-ng voices (never trained on) and ALSA's "
        "recorded human voice.",
        f"- int8 is `{int8_scheme}` (the decoder's weights in 8-bit blocks, activations quantised per row, "
        "the encoder in fp32): a clip's transcript does not depend on its batch. int8 kernels differ by CPU "
        "instruction set: compare int8 figures within one machine (this report's CPU is in bench/bench.json).",
        "",
        "## What was merged",
        "",
        f"- {sel.get('checkpoint') or 'the untrained student'} at alpha {sel.get('alpha', 0):.2f}: {sel.get('reason', 'n/a')}",
        f"- dev WER during training: {pct(summary.get('wer_before'))} at step 0 → {pct(summary.get('wer_after'))} "
        "at the last step (full table in run/eval.jsonl)",
        "",
        "## The frontier: WER against latency (pareto.png)",
        "",
        "One bench run on the in-domain test clips (batch 1 and batch 8, 2 threads, CPU); WER per test set from "
        "the scoring above. The student ships as ONNX int8 with its encoder windows.",
        "",
        *pareto_table(head.pareto),
        "",
        "The shipped student against each point a user gets without mkd's training:",
        "",
        *shipped_verdicts(head.pareto),
        "",
        "## Latency (batch 1, greedy, CPU; speed-up against tiny.en whole in ONNX int8)",
        "",
        bench_md,
        "",
        "## Stage times (s)",
        "",
        *[f"- {k}: {v}" for k, v in timings.items()],
        f"- total: {60 * head.minutes:.0f}",
        "",
    ]
