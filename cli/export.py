"""`mkd export`: HF Whisper directory -> validated ONNX export (fp32, optional int8 and fp16)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mkdeploy.cli.common import cli_errors, console, out, quiet_libraries


def export_cmd(
    model: Path = typer.Argument(..., help="HF Whisper directory (imported teacher or merged student)."),
    output: Path = typer.Argument(..., help="Export directory to create."),
    quantize: str | None = typer.Option(None, "--quantize", help="int8: add a dynamically quantised CPU variant."),
    per_channel: bool = typer.Option(
        True, "--per-channel/--per-tensor", help="int8 scales per output channel (default) or per tensor."
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
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx

    quiet_libraries()
    with cli_errors():
        samples = [load_audio(p) for p in sample_audio]
        opts = ExportOptions(
            quantize=quantize, per_channel=per_channel, fp16=fp16, opset=opset, atol=atol, validate=validate
        )
        with console.status(f"exporting {model}"):
            manifest = export_onnx(model, output, opts, force=force, samples=samples or None, device=device)
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
    out.print(f"wrote {output} ({manifest.sample_audio or 'no parity check'})")
