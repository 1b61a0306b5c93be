"""`mkd transcribe`: audio files -> txt / json / srt / vtt."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from mkdeploy.cli.common import (
    Fields,
    cli_errors,
    config_command,
    console,
    exit_on_failures,
    needs_extra,
    out,
    progress,
    quiet_libraries,
)
from mkdeploy.constants import DTYPE_HELP, THREADS_HELP
from mkdeploy.distributed.config import RayConfig
from mkdeploy.errors import MkdError
from mkdeploy.options import TranscriptionOptions

#: why a transcript is empty, as printed after it
GATE_NOTES = {
    "silence": " (silent: nothing decoded)",
    "vad": " (no speech found by the VAD)",
    "no_speech": " (no speech: Whisper's no-speech test)",
}


@dataclass
class DecodeFlags:
    """The options of `mkd transcribe` that pick the engine and how it decodes, one ``--option`` per field
    (help in the field's metadata), so a new one reaches the CLI without a second edit."""

    language: str = field(
        default="auto",
        metadata={
            "help": "Language code for multilingual models; auto detects it per file from its first 30 s "
            "(.en models are always English)."
        },
    )
    task: str = field(default="transcribe", metadata={"help": "transcribe or translate (multilingual models)."})
    batch_size: int = field(default=TranscriptionOptions.batch_size, metadata={"help": "Clips decoded together."})
    beam_size: int = field(
        default=TranscriptionOptions.num_beams,
        metadata={
            "help": "Beams per clip (1: greedy, the fastest; faster-whisper and openai/whisper's CLI use 5). "
            "Cost and gain on the demo's sets: benchmarks/results/beam_size.md."
        },
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": "auto, torch, onnx (optimum) or onnx-lean (ONNX Runtime, numpy and tokenizers only; what auto "
            "runs an export on where torch is not installed)."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto, cuda or cpu."})
    threads: int = field(default=0, metadata={"help": THREADS_HELP})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})
    variant: str | None = field(
        default=None,
        metadata={"help": "ONNX variant: fp32, int8 or fp16 (default: the folder given, fp32 at an export's root)."},
    )
    timestamps: bool = field(
        default=TranscriptionOptions.return_timestamps, metadata={"help": "Predict segment times."}
    )
    encoder_buckets: list[int] | None = field(
        default=None,
        metadata={"help": "Encoder windows in seconds, e.g. 5,10,20,30 (default: the model's own; 30: Whisper's)."},
    )
    vad: bool = field(
        default=False, metadata={"help": "Silero VAD first: audio without speech gives '' (needs the [serve] extra)."}
    )
    no_speech_threshold: float = field(
        default=TranscriptionOptions.no_speech_threshold or 1.0,
        metadata={"help": "Whisper's no-speech gate (with avg logprob < -1); 1 turns it off."},
    )
    word_timestamps: bool = field(
        default=False,
        metadata={
            "help": "Each word's start, end and probability (json; srt/vtt get one cue per word): "
            "cross-attention alignment, PyTorch (an ONNX export is aligned by the model it was exported from)."
        },
    )
    batched: bool = field(
        default=False,
        metadata={
            "help": "Audio over 30 s: cut at Silero VAD pauses into pieces of at most 30 s decoded as one batch "
            "(faster than window by window; needs the [serve] extra)."
        },
    )
    prompt: str | None = field(
        default=None,
        metadata={
            "help": "Text the decoder reads as the previous context (Whisper's initial prompt, the API's prompt): "
            "names and spellings to prefer."
        },
    )


@config_command
def transcribe(
    model: Path = typer.Argument(
        ..., help="HF Whisper directory, ONNX export, or a CTranslate2 / whisper.cpp export (run by its engine)."
    ),
    audio: list[Path] = typer.Argument(..., help="Audio files or folders of audio files."),
    output_dir: Path = typer.Option(Path("transcripts"), "--output-dir", "-o", help="Where transcripts go."),
    fmt: list[str] = typer.Option(["txt"], "--format", "-f", help="txt, json, srt or vtt (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing transcripts."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray (the [ray] extra): AUDIO is one manifest or folder."),
    shard_size: int = typer.Option(
        64, "--shard-size", help="With --ray: inputs per output shard (the unit a re-run skips)."
    ),
    decode_fields: dict[str, Any] = Fields(DecodeFlags),
    ray_fields: dict[str, Any] = Fields(RayConfig),
) -> None:
    """Transcribe audio files; bad files are listed and the rest still transcribed.

    With --ray: AUDIO is one manifest or folder, transcribed by --actors model actors on Ray Data into JSONL
    shards in --output-dir (a re-run skips finished shards)."""
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.audio import expand_audio_paths
    from mkdeploy.transcription.exported import ExportedTranscriber, is_exported_dir
    from mkdeploy.transcription.loading import load_transcriber
    from mkdeploy.transcription.writers import WRITERS, get_writer

    quiet_libraries()
    with cli_errors():
        flags = DecodeFlags(**decode_fields)
        bad = [f for f in fmt if f not in WRITERS]
        if bad:
            raise MkdError(f"--format {bad[0]}: choose txt, json, srt or vtt")
        _check_flags(flags)
        if ray:
            return _transcribe_on_ray(model, audio, output_dir, force, shard_size, flags, RayConfig(**ray_fields))
        paths = expand_audio_paths(audio)
        if not paths:
            raise MkdError(f"no audio files found in {', '.join(map(str, audio))}")
        writers = [get_writer(f, output_dir, word_level=flags.word_timestamps) for f in fmt]
        opts = _options(flags)
        tr: Any
        if is_exported_dir(model):  # faster-whisper's or whisper.cpp's format: run by that engine
            if flags.backend != "auto" or flags.variant or flags.dtype != "auto":
                raise MkdError(f"{model}: an export for another server; its engine and precision are the export's")
            tr = ExportedTranscriber(model, opts.language, flags.device, flags.threads)
        else:
            tr = load_transcriber(model, flags.backend, flags.device, flags.threads, flags.dtype, flags.variant)
            _print_windows(tr, opts)
        console.print(f"model {model} on {tr.backend}/{tr.device}" + (f" ({tr.provider})" if tr.provider else ""))
        _check_targets(paths, writers, force)
        with progress(disable=len(paths) < 2) as bar:
            job = bar.add_task("transcribing", total=len(paths))
            results, failures = tr.transcribe_files(paths, opts, on_progress=lambda n: bar.advance(job, n))
        _write_and_print(results, failures, writers, output_dir)


def _transcribe_on_ray(
    model: Path,
    audio: list[Path],
    output_dir: Path,
    force: bool,
    shard_size: int,
    flags: DecodeFlags,
    config: RayConfig,
) -> None:
    # imported on use: Ray only for --ray, and `mkd --help` stays fast
    from mkdeploy.data import load_manifest

    with needs_extra("ray", "mkd transcribe --ray"):
        from mkdeploy.distributed.transcribe import ModelSpec, transcribe_on_ray

    if len(audio) != 1:
        raise MkdError("--ray takes one manifest (JSONL) or one folder of audio files")
    rows = load_manifest(audio[0])
    config = config.check()
    spec = ModelSpec(str(model), flags.backend, flags.device, flags.variant, flags.threads, flags.dtype)
    console.print(f"{len(rows)} inputs, {config.actors} actors on Ray, shards of {shard_size}")
    job = transcribe_on_ray(
        rows,
        spec,
        _options(flags),
        output_dir,
        config,
        shard_size=shard_size,
        force=force,
        on_shard=lambda p, n: console.print(f"wrote {p} ({n} rows)", highlight=False),
    )
    rate = f", {job.audio_seconds / job.seconds:.1f} audio-s/s" if job.seconds else ""
    out.print(
        f"{job.rows} transcribed in {job.seconds:.1f} s{rate}; {len(job.written)} shards written, "
        f"{len(job.skipped)} already done -> {output_dir}"
    )


def _check_flags(flags: DecodeFlags) -> None:
    if flags.backend not in ("auto", "torch", "onnx", "onnx-lean") or flags.device not in ("auto", "cuda", "cpu"):
        raise MkdError("--backend takes auto|torch|onnx|onnx-lean and --device auto|cuda|cpu")
    if flags.batch_size < 1 or flags.threads < 0 or not 0.0 <= flags.no_speech_threshold <= 1.0:
        raise MkdError("--batch-size must be >= 1, --threads >= 0 and --no-speech-threshold within 0..1")
    if flags.beam_size < 1:
        raise MkdError(f"--beam-size {flags.beam_size}: give 1 (greedy) or more beams, e.g. 5")


def _options(flags: DecodeFlags):
    # imported on use, so `mkd --help` stays fast
    from mkdeploy.models.window import parse_buckets

    return TranscriptionOptions(
        language=None if flags.language.lower() == "auto" else flags.language,
        task=flags.task,
        batch_size=flags.batch_size,
        num_beams=flags.beam_size,
        return_timestamps=flags.timestamps,
        encoder_buckets=parse_buckets(",".join(map(str, flags.encoder_buckets))) if flags.encoder_buckets else None,
        vad_filter=flags.vad,
        no_speech_threshold=None if flags.no_speech_threshold >= 1.0 else flags.no_speech_threshold,
        initial_prompt=flags.prompt or None,
        word_timestamps=flags.word_timestamps,
        batched_long_form=flags.batched,
    )


def _print_windows(tr, opts) -> None:
    windows = tr.windows(opts)
    if windows.windowed:
        console.print(
            f"encoder windows: {', '.join(f'{b} s' for b in windows.buckets)}"
            + ("" if tr.model_buckets else " (untrained for them: expect some accuracy loss)")
        )


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
        if r.language_probability is not None:  # detected, not given: say what was decided
            note += f" [language {r.language}, p={r.language_probability:.2f}]"
        out.print(f"{r.path}: {r.text}{note}", highlight=False, soft_wrap=True)
    out.print(f"{len(results)} transcribed -> {output_dir}")
    exit_on_failures(failures)
