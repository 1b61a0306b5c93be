"""The frontier of WER against latency: the points a user can choose (the student, tiny.en on each engine, the
teacher), which dominate which, the shipped student's verdict against each, the table and the plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mkdeploy.demo.corpus import SETS
from mkdeploy.stats import pct

#: the test sets by their headline names

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
