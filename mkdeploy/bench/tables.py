"""bench.md, latency_vs_wer.png and bench.json: one writer per format."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from mkdeploy.bench.figures import MEMORY_NOTES, BenchReport
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.stats import pct
from mkdeploy.transcription.loading import installed


def markdown_table(report: BenchReport) -> str:
    """The bench table in Markdown (what bench.md holds)."""
    env = report.environment
    lines = [
        f"# mkd bench: {len(report.models)} models, {report.models[0].clips if report.models else 0} clips "
        f"({report.audio_seconds:.1f} s of audio)",
        "",
        f"{env.get('cpu')} · threads: {env.get('threads', 'engine defaults')} ({env.get('torch_threads')} torch)"
        + (f" · {env['gpu']}" if env.get("gpu") else "")
        + f" · batch 1, greedy · {report.warmup} warm-up, {report.repeats} interleaved repeats, median per clip"
        + f" · reference: {report.reference}",
        "",
        "| model | backend | variant | windows (s) | device / provider | params (M) | size (MB) | p50 (ms) | p90 (ms) "
        "| p99 (ms) | RTF | audio s/s | tokens/s | RSS (MB) | WER % | CER % | WER vs ref % | speed-up |",
        "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in report.models:
        dev = m.provider or m.device
        lines.append(
            f"| {m.name} | {m.backend} | {m.variant} | {m.windows} | {dev} | {m.params / 1e6:.1f} | {m.size_mb:.0f} "
            f"| {1000 * m.latency_p50:.0f} | {1000 * m.latency_p90:.0f} | {1000 * m.latency_p99:.0f} | {m.rtf:.3f} "
            f"| {m.audio_s_per_s:.1f} | {m.tokens_per_s:.0f} | {m.rss_mb:.0f} | {pct(m.wer, '')} | {pct(m.cer, '')} "
            f"| {pct(m.wer_vs_reference, '')} | {m.speedup:.2f}x |"
        )
    lines += [
        "",
        f"RSS: resident memory added by loading and warming up the model ({MEMORY_NOTES[report.memory]}). "
        "Speed-up: reference p50 / model p50.",
        "",
    ]
    cold = [m for m in report.models if m.cold_start_s is not None]
    if cold:
        lines += [
            "Cold start (a fresh process: start, imports, load, first transcript of the first clip): "
            + ", ".join(f"{m.name} {m.cold_start_s:.2f} s" for m in cold)
            + ".",
            "",
        ]
    if report.throughput:
        lines += [
            "## Throughput (all clips in batches, after one warm-up batch)",
            "",
            "| model | batch | clips | clips/s | audio s/s | batch p50 (ms) | batch p90 (ms) |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for t in report.throughput:
            lines.append(
                f"| {t.name} | {t.batch_size} | {t.clips} | {t.clips_per_s:.2f} | {t.audio_s_per_s:.1f} "
                f"| {1000 * t.batch_p50:.0f} | {1000 * t.batch_p90:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(report: BenchReport, path: Path) -> None:
    """Latency (p50, ms) against WER (against references, else against the reference model)."""
    import matplotlib  # only `mkd bench --plot` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # only `mkd bench --plot` needs it

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    use_ref = all(m.wer is not None for m in report.models)
    for m in report.models:
        x, y = 1000 * m.latency_p50, 100 * ((m.wer if use_ref else m.wer_vs_reference) or 0.0)
        ax.scatter(x, y, s=40)
        ax.annotate(m.name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("latency p50 per clip (ms)")
    ax.set_ylabel("WER (%)" + ("" if use_ref else f" against {report.reference}"))
    ax.set_title("latency vs WER (lower left is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: BenchReport, out: str | Path, force: bool = False) -> Path:
    """Write bench.json, bench.md and latency_vs_wer.png into ``out`` (atomically, as one directory)."""

    out = Path(out)
    with atomic_output_dir(out, force=force) as tmp:
        (tmp / "bench.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False) + "\n")
        (tmp / "bench.md").write_text(markdown_table(report))
        if installed("matplotlib"):  # the [train] extra; the base install writes the tables only
            plot(report, tmp / "latency_vs_wer.png")
    return out
