"""`mkd bench`: WER and latency of several models side by side (JSON, Markdown, plot)."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, console, out, quiet_libraries
from mkdeploy.constants import DTYPE_HELP, THREADS_HELP


def bench_cmd(
    manifest: Path = typer.Argument(..., help="JSONL manifest or folder of clips (references give WER)."),
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="NAME=PATH[:buckets=5,10,20,30][:compute_type=int8][:ort=lean]: a PyTorch, ONNX (any variant folder) "
        "or CTranslate2 directory (repeatable); buckets set its encoder windows (30: Whisper's); "
        "compute_type is CTranslate2's (int8, int8_float16, float16, float32); ort turns off ONNX Runtime's "
        "memory arena, memory pattern or weight prepacking (no-arena, no-pattern, no-prepack; lean: all three).",
    ),
    reference: str | None = typer.Option(
        None, "--reference", help="Model the others are compared with (default: first)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for bench.json, bench.md, latency_vs_wer.png."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs per clip and model."),
    warmup: int = typer.Option(1, "--warmup", min=0),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    language: str = typer.Option("en", "--language"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N clips."),
    threads: int = typer.Option(0, "--threads", min=0, help=THREADS_HELP),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
    batch_size: str = typer.Option(
        "", "--batch-size", help="Also measure throughput at these batch sizes, e.g. 1,8,32 (clips/s, audio s/s)."
    ),
    memory: str = typer.Option(
        "fresh",
        "--memory",
        help="RSS per model: fresh (a process of its own, the engines' libraries imported first), process (the "
        "whole process of the model run alone, and its cold start) or inline (this one, load order matters).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Benchmark models on the same clips: latency percentiles, RTF, throughput, memory, size, WER."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.bench import markdown_table, parse_batch_sizes, parse_model_spec, run_bench, write_report
    from mkdeploy.fsutil import check_writable

    quiet_libraries()
    with cli_errors():
        check_writable(output, force)
        specs = [parse_model_spec(m) for m in model]
        sizes = parse_batch_sizes(batch_size)
        with console.status("benchmarking") as status:
            report = run_bench(
                manifest, specs, reference, repeats, warmup, device, language, limit,
                on_progress=lambda s: status.update(f"benchmarking: {s}"), threads=threads, dtype=dtype,
                batch_sizes=sizes, memory=memory,
            )  # fmt: skip
        write_report(report, output, force=force)
    typer.echo(markdown_table(report))  # plain: a Markdown table must not be re-wrapped
    out.print(f"wrote {output}/bench.json, bench.md, latency_vs_wer.png")
