"""`mkd transcribe`: audio files -> txt / json / srt / vtt."""

from __future__ import annotations

from pathlib import Path

import typer

from mkdeploy.cli.common import cli_errors, console, exit_on_failures, out, progress, quiet_libraries

#: why a transcript is empty, as printed after it
GATE_NOTES = {
    "silence": " (silent: nothing decoded)",
    "vad": " (no speech found by the VAD)",
    "no_speech": " (no speech: Whisper's no-speech test)",
}


def transcribe(
    model: Path = typer.Argument(..., help="HF Whisper directory or ONNX export directory."),
    audio: list[Path] = typer.Argument(..., help="Audio files or folders of audio files."),
    output_dir: Path = typer.Option(Path("transcripts"), "--output-dir", "-o", help="Where transcripts go."),
    fmt: list[str] = typer.Option(["txt"], "--format", "-f", help="txt, json, srt or vtt (repeatable)."),
    language: str = typer.Option("en", "--language", help="Language code for multilingual models."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate (multilingual models)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    backend: str = typer.Option("auto", "--backend", help="auto, torch or onnx."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads (torch and ONNX Runtime); 0: their defaults."),
    dtype: str = typer.Option(
        "auto", "--dtype", help="PyTorch weights: auto (fp16 on CUDA), float32, float16, bfloat16."
    ),
    variant: str | None = typer.Option(
        None,
        "--variant",
        help="ONNX variant: fp32, int8 or fp16 (default: the folder given, fp32 at an export's root).",
    ),
    timestamps: bool = typer.Option(True, "--timestamps/--no-timestamps", help="Predict segment times."),
    encoder_buckets: str | None = typer.Option(
        None,
        "--encoder-buckets",
        help="Encoder windows in seconds, e.g. 5,10,20,30 (default: the model's own; 30 forces Whisper's window).",
    ),
    vad: bool = typer.Option(
        False, "--vad/--no-vad", help="Silero VAD first: audio without speech gives '' (needs the [serve] extra)."
    ),
    no_speech_threshold: float = typer.Option(
        0.6,
        "--no-speech-threshold",
        min=0.0,
        max=1.0,
        help="Whisper's no-speech gate (with avg logprob < -1); 1 turns it off.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing transcripts."),
) -> None:
    """Transcribe audio files; bad files are listed and the rest still transcribed."""
    # imported on use, as in every command module: `mkd --help` stays fast
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.audio import expand_audio_paths
    from mkdeploy.errors import MkdError
    from mkdeploy.models.window import parse_buckets
    from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber
    from mkdeploy.writers import WRITERS, get_writer

    quiet_libraries()
    with cli_errors():
        bad = [f for f in fmt if f not in WRITERS]
        if bad:
            raise MkdError(f"--format {bad[0]}: choose txt, json, srt or vtt")
        if backend not in ("auto", "torch", "onnx") or device not in ("auto", "cuda", "cpu"):
            raise MkdError("--backend takes auto|torch|onnx and --device auto|cuda|cpu")
        paths = expand_audio_paths(audio)
        if not paths:
            raise MkdError(f"no audio files found in {', '.join(map(str, audio))}")
        writers = [get_writer(f, output_dir) for f in fmt]
        kw = {"variant": variant} if variant else {}
        tr = WhisperTranscriber.from_pretrained(model, backend, device, threads, dtype, **kw)
        console.print(f"model {model} on {tr.backend}/{tr.device}" + (f" ({tr.provider})" if tr.provider else ""))
        _check_targets(paths, writers, force)
        opts = TranscriptionOptions(
            language=language,
            task=task,
            batch_size=batch_size,
            return_timestamps=timestamps,
            encoder_buckets=parse_buckets(encoder_buckets) if encoder_buckets else None,
            vad_filter=vad,
            no_speech_threshold=None if no_speech_threshold >= 1.0 else no_speech_threshold,
        )
        windows = tr.windows(opts)
        if windows.windowed:
            console.print(
                f"encoder windows: {', '.join(f'{b} s' for b in windows.buckets)}"
                + ("" if tr.model_buckets else " (untrained for them: expect some accuracy loss)")
            )
        with progress(disable=len(paths) < 2) as bar:
            job = bar.add_task("transcribing", total=len(paths))
            results, failures = tr.transcribe_files(paths, opts, on_progress=lambda n: bar.advance(job, n))
        _write_and_print(results, failures, writers, output_dir)


def _check_targets(paths, writers, force: bool) -> None:
    """Refuse before decoding anything when a transcript would overwrite one without --force."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.fsutil import check_writable

    if force:
        return
    for p in paths:
        for w in writers:
            check_writable(w.output_dir / f"{Path(p).stem}.{w.extension}", force)


def _write_and_print(results, failures, writers, output_dir: Path) -> None:
    for r in results:
        for w in writers:
            w(r, force=True)
        note = GATE_NOTES.get(r.gate, "")
        out.print(f"{r.path}: {r.text}{note}", highlight=False, soft_wrap=True)
    out.print(f"{len(results)} transcribed -> {output_dir}")
    exit_on_failures(failures)
