"""The demo's figures: headline.json (a schema a script can check) and REPORT.md (what a reader checks).

Six scored configurations: teacher, untrained and distilled student, each in PyTorch fp32 (the model's
quality) and ONNX int8 (what ships), with one decoding configuration for all (:data:`DECODING`). Every
difference called a gain carries a paired-bootstrap 95% interval over the test clips (:mod:`mkdeploy.stats`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mkdeploy.stats import gap_closed, paired_bootstrap, pct

#: the test sets by their headline names
SETS = {"test_in_domain": "in_domain", "test_unseen_text": "unseen_text", "test_unseen_speech": "unseen_speech"}
TITLES = {"test_in_domain": "in-domain", "test_unseen_text": "unseen text", "test_unseen_speech": "unseen speech"}
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
SHIPPED = "distilled_int8"


@dataclass
class ParetoPoint:
    """One point of the WER-versus-latency frontier, from one bench run and the scoring of the test sets.

    Attributes:
        key: the configuration (``teacher_fp32``, ``source_ct2``, ``distilled_int8``, ...).
        p50_ms: median latency per clip at batch 1 (in-domain test clips).
        clips_per_s: throughput in batches of ``batch``.
        wer: WER (fraction) per test set (``in_domain``, ``unseen_text``, ``unseen_speech``).
        on_frontier: no other point is as fast and as accurate in-domain with one of the two strictly better.
    """

    key: str
    name: str
    engine: str
    variant: str
    windows: str
    p50_ms: float
    clips_per_s: float | None
    batch: int | None
    wer: dict[str, float]
    on_frontier: bool = False


def pareto_rows(bench, scores: dict[str, dict], names: dict[str, str]) -> list[dict]:
    """The frontier's points: each benched model (``names``: configuration -> bench name) with its batch-1
    p50, its batch throughput and its WER on each test set (from ``scores``, by configuration)."""
    by_name = {m.name: m for m in bench.models}
    tput = {t.name: t for t in bench.throughput}
    points = []
    for key, name in names.items():
        m = by_name.get(name)
        if m is None or key not in scores:
            continue
        t = tput.get(name)
        points.append(
            ParetoPoint(
                key=key,
                name=name,
                engine=m.backend,
                variant=m.variant,
                windows=m.windows,
                p50_ms=round(1000 * m.latency_p50, 1),
                clips_per_s=round(t.clips_per_s, 2) if t else None,
                batch=t.batch_size if t else None,
                wer={SETS[split]: round(scores[key][split]["wer"], 6) for split in SETS},
            )
        )
    for p in points:
        p.on_frontier = not any(_dominates(q, p) for q in points if q is not p)
    return [asdict(p) for p in points]


def _dominates(a: ParetoPoint, b: ParetoPoint) -> bool:
    wa, wb = a.wer["in_domain"], b.wer["in_domain"]
    return a.p50_ms <= b.p50_ms and wa <= wb and (a.p50_ms < b.p50_ms or wa < wb)


def shipped_verdicts(pareto: list[dict]) -> list[str]:
    """Against each point a user gets without training, whether the shipped student is ahead of it: faster
    at no worse in-domain WER, or more accurate at no slower speed."""
    ship = next((p for p in pareto if p["key"] == SHIPPED), None)
    if ship is None:
        return []
    out = []
    for p in pareto:
        if p["key"] in (SHIPPED, "untrained_fp32", "distilled_fp32"):
            continue
        speed, dw = p["p50_ms"] / ship["p50_ms"], 100 * (ship["wer"]["in_domain"] - p["wer"]["in_domain"])
        if ship["p50_ms"] <= p["p50_ms"] and dw <= 0:
            what = "ahead (as fast or faster, as accurate or more)"
        elif ship["p50_ms"] > p["p50_ms"] and dw < 0:
            what = "a trade (slower, more accurate)"
        elif ship["p50_ms"] <= p["p50_ms"]:
            what = "a trade (faster, less accurate)"
        else:
            what = "behind (slower and less accurate)"
        out.append(f"- against {p['name']}: {speed:.2f}x its speed, {dw:+.2f} WER points in-domain: {what}.")
    return out


def pareto_table(pareto: list[dict]) -> list[str]:
    """The frontier as a markdown table (the plot's numbers)."""
    lines = [
        "| model | engine | windows (s) | p50 ms (batch 1) | clips/s (batch 8) | in-domain | unseen text "
        "| unseen speech | on the frontier |",
        "|---|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for p in sorted(pareto, key=lambda p: p["p50_ms"]):
        name = f"**{p['name']}**" if p["key"] == SHIPPED else p["name"]
        w = p["wer"]
        tput = "n/a" if p["clips_per_s"] is None else f"{p['clips_per_s']:.2f}"
        lines.append(
            f"| {name} | {p['engine']} {p['variant']} | {p['windows']} | {p['p50_ms']:.0f} | "
            f"{tput} | {pct(w['in_domain'])} | "
            f"{pct(w['unseen_text'])} | {pct(w['unseen_speech'])} | {'yes' if p['on_frontier'] else ''} |"
        )
    return lines


def plot_pareto(pareto: list[dict], path: Path) -> None:
    """pareto.png: in-domain WER against batch-1 p50 latency, the frontier drawn, the shipped student named."""
    import matplotlib  # the demo's picture only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # the demo's picture only

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    others = [p for p in sorted(pareto, key=lambda p: p["p50_ms"]) if p["key"] != SHIPPED]
    for p in pareto:
        x, y, ship = p["p50_ms"], 100 * p["wer"]["in_domain"], p["key"] == SHIPPED
        k = 1 if ship else 2 * others.index(p)  # the shipped label below its point, the others alternating
        ax.scatter(x, y, s=90 if ship else 40, marker="*" if ship else "o", color="C3" if ship else "C0", zorder=3)
        label = f"{p['name']} [{_windows(p['windows'])} s]" + ("  <- shipped" if ship else "")
        # neighbours in latency alternate above and below their point, so close labels do not overlap
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 5 if k % 4 == 0 else -11), fontsize=7.5,
                    fontweight="bold" if ship else "normal")  # fmt: skip
    front = sorted((p["p50_ms"], 100 * p["wer"]["in_domain"]) for p in pareto if p["on_frontier"])
    if len(front) > 1:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", color="C3", alpha=0.4, lw=1, label="frontier")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("latency p50 per clip, batch 1 (ms)")
    ax.set_ylabel("WER in-domain (%)")
    ax.set_title("WER against latency on the demo's in-domain test clips (lower left is better)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _windows(windows: str) -> str:
    """``"2,4,...,20,30"`` -> ``"2-20,30"`` on the plot."""
    parts = windows.split(",")
    return f"{parts[0]}-{parts[-2]},{parts[-1]}" if len(parts) > 3 else windows
