"""`mkd export`: HF Whisper directory -> validated ONNX export (fp32, optional int8 and fp16)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mkdeploy.cli.common import cli_errors, console, error_line, out, quiet_libraries


def export_cmd(
    model: Path = typer.Argument(..., help="HF Whisper directory (imported teacher or merged student)."),
    output: Path = typer.Argument(..., help="Export directory to create."),
    fmt: str = typer.Option(
        "onnx",
        "--format",
        help="onnx (ONNX Runtime, mkd's own runtime), ct2 (CTranslate2: faster-whisper, speaches) or ggml "
        "(whisper.cpp).",
    ),
    quantization: str | None = typer.Option(
        None,
        "--quantization",
        help="With --format ct2: int8 (default), int8_float16, float16 or float32; with --format ggml: q8_0 "
        "(default) or f16.",
    ),
    quantize: str | None = typer.Option(None, "--quantize", help="int8: add a dynamically quantised CPU variant."),
    int8_scheme: str = typer.Option(
        "auto",
        "--int8-scheme",
        help="auto: quantise with the schemes whose transcripts do not depend on the batch "
        "(blockwise-decoder-fp32-encoder), measure them on the calibration audio, ship the fastest within "
        "--max-wer-delta of fp32; auto-all: the same over every scheme, the dynamic ones too (per-channel, "
        "per-channel-reduce-range, per-channel-fp32-edges, per-tensor, blockwise-decoder-per-channel-encoder: "
        "faster, but a clip's transcript changes with its batch) and blockwise-decoder-static-encoder (static "
        "int8 scales fixed on the calibration audio: batch-invariant and faster, but off that audio's kind "
        "of speech far less accurate); or one of those names.",
    ),
    max_wer_delta: float = typer.Option(
        0.3, "--max-wer-delta", help="The int8 budget: WER points over fp32 on the calibration audio."
    ),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="Manifest (JSONL or folder) of audio like the model will serve; rows with text are scored against "
        "it, else against fp32's transcripts (default: the committed parity clips).",
    ),
    fp16: bool = typer.Option(False, "--fp16", help="Add an fp16 variant for GPUs."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (default: optimum's)."),
    atol: float = typer.Option(1e-3, "--atol", help="Tolerance of the output check against PyTorch."),
    sample_audio: list[Path] = typer.Option(
        [], "--sample-audio", help="Clips for the token parity check (repeatable)."
    ),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Check parity against PyTorch."),
    device: str = typer.Option("cpu", "--device", help="Where the parity check runs ONNX Runtime: cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Replace an existing export."),
) -> None:
    """Export to ONNX with optimum (encoder + merged decoder with past key values) and check parity."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.audio import load_audio
    from mkdeploy.data import load_manifest
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx

    quiet_libraries()
    if fmt in ("ct2", "ggml"):
        _export_for_engine(fmt, model, output, quantization, sample_audio, validate, force)
        return
    with cli_errors():
        if fmt != "onnx":
            from mkdeploy.errors import MkdError

            raise MkdError(f"--format {fmt}: choose onnx, ct2 or ggml")
        samples = [load_audio(p) for p in sample_audio]
        calib = [(load_audio(u.audio), u.text) for u in load_manifest(calibration)] if calibration else None
        opts = ExportOptions(
            quantize=quantize,
            int8_scheme=int8_scheme,
            max_wer_delta=max_wer_delta,
            fp16=fp16,
            opset=opset,
            atol=atol,
            validate=validate,
        )
        with console.status(f"exporting {model}"):
            manifest = export_onnx(
                model, output, opts, force=force, samples=samples or None, device=device, calibration=calib
            )
    table = Table(title=f"{output} (opset {manifest.opset}, {manifest.seconds:.0f} s)")
    for col in ("variant", "MB", "identical clips", "token agreement", "max |Δlogit|", "provider"):
        table.add_column(col, justify="right")
    checks = {p["variant"]: p for p in manifest.parity}
    for name, v in manifest.variants.items():
        p = checks.get(name, {})
        if "clips" in p:
            row = [
                f"{p['identical']}/{p['clips']}",
                f"{100 * p['token_agreement']:.1f}%",
                f"{p['max_abs_logit_diff']:.2e}",
                p["provider"],
            ]
        else:
            row = [p.get("skipped", "not checked"), "", "", ""]
        table.add_row(name, f"{v['bytes'] / 1e6:.1f}", *row)
    out.print(table)
    int8 = manifest.variants.get("int8", {})
    for s in int8.get("schemes", []):
        out.print(
            f"int8 {s['scheme']}: WER {100 * s['wer']:.2f}% ({s['wer_delta_points']:+.2f} points vs fp32), "
            f"{s['ms_per_clip']:.0f} ms per clip{'' if s['within_budget'] else ', over budget'}"
        )
    if int8:
        over = "schemes" in int8 and not any(s["within_budget"] for s in int8["schemes"])
        line = f"int8 ships {int8['scheme']}: {int8['why']}"
        out.print(error_line(line, "warning:") if over else line)
    out.print(f"wrote {output} ({manifest.sample_audio or 'no parity check'})")


def _export_for_engine(
    fmt: str, model: Path, output: Path, quantization: str | None, sample_audio: list[Path], validate: bool, force: bool
):
    """``--format ct2`` or ``ggml``: the export, its warnings, heads and parity, and how the target loads it."""
    from mkdeploy.audio import load_audio  # imported on use, so `mkd --help` stays fast
    from mkdeploy.exporters.ct2 import export_ct2
    from mkdeploy.exporters.ggml import export_ggml
    from mkdeploy.models.ggml import GGML_FILE

    export, default, engine = {
        "ct2": (export_ct2, "int8", "CTranslate2"),
        "ggml": (export_ggml, "q8_0", "whisper.cpp"),
    }[fmt]
    quantization = quantization or default
    with cli_errors():
        samples = [load_audio(p) for p in sample_audio] or None
        with console.status(f"writing {model} for {engine}"):
            m = export(model, output, quantization, force=force, samples=samples, validate=validate)
    for w in m.warnings:
        out.print(error_line(w, "warning:"))
    out.print(f"alignment heads ({m.heads_source}): {m.alignment_heads}")
    if m.parity:
        out.print(
            f"parity: {m.identical}/{len(m.parity)} clips as PyTorch transcribes them "
            f"({m.word_errors} words differ), {quantization}"
        )
    loads = (
        f"faster_whisper.WhisperModel({str(output)!r})"
        if fmt == "ct2"
        else f"whisper-cli -m {output / GGML_FILE} -f AUDIO"
    )
    out.print(f"wrote {output} ({m.seconds:.0f} s): {loads} loads it")
