"""Transcript writers, one class per output format (as openai/whisper's ``ResultWriter``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from mkdeploy.fsutil import atomic_write_text
from mkdeploy.results import Transcription


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """Seconds as [HH:]MM:SS.mmm."""
    ms = int(round(max(seconds, 0.0) * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    hh = f"{hours:02d}:" if always_include_hours or hours else ""
    return f"{hh}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


class ResultWriter:
    """Writes one transcription to ``output_dir/<audio stem>.<extension>`` atomically.

    Args:
        output_dir: where the files go.
        word_level: subtitle formats write one cue per word when the result has word timestamps.
    """

    extension: str = ""

    def __init__(self, output_dir: str | Path, word_level: bool = False):
        self.output_dir = Path(output_dir)
        self.word_level = word_level

    def path_for(self, result: Transcription) -> Path:
        return self.output_dir / f"{Path(result.path).stem or 'audio'}.{self.extension}"

    def __call__(self, result: Transcription, force: bool = True) -> Path:
        return atomic_write_text(self.path_for(result), self.render(result), force=force)

    def render(self, result: Transcription) -> str:
        raise NotImplementedError

    def _segments(self, result: Transcription):
        if self.word_level and result.words:
            return [(w.start, w.end, w.word.strip()) for w in result.words]
        # A transcript decoded without timestamps still gets one cue covering the clip.
        if result.segments:
            return [(s.start, s.end, s.text) for s in result.segments]
        return [(0.0, result.duration, result.text)] if result.text else []


class WriteTXT(ResultWriter):
    extension = "txt"

    def render(self, result: Transcription) -> str:
        return result.text + "\n"


class WriteJSON(ResultWriter):
    extension = "json"

    def render(self, result: Transcription) -> str:
        d = {
            "path": result.path,
            "text": result.text,
            "duration": result.duration,
            "silent": result.silent,
            "gate": result.gate,
            "language": result.language,
            "language_probability": result.language_probability,
            "no_speech_prob": result.no_speech_prob,
            "avg_logprob": result.avg_logprob,
            "segments": [
                {
                    "id": i,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": s.tokens,
                    **({"words": [asdict(w) for w in s.words]} if result.words else {}),
                }
                for i, s in enumerate(result.segments)
            ],
            **({"words": [asdict(w) for w in result.words]} if result.words else {}),
        }
        return json.dumps(d, ensure_ascii=False, indent=2) + "\n"


class WriteSRT(ResultWriter):
    extension = "srt"

    def render(self, result: Transcription) -> str:
        blocks = []
        for i, (start, end, text) in enumerate(self._segments(result), start=1):
            blocks.append(f"{i}\n{format_timestamp(start, True, ',')} --> {format_timestamp(end, True, ',')}\n{text}\n")
        return "\n".join(blocks)


class WriteVTT(ResultWriter):
    extension = "vtt"

    def render(self, result: Transcription) -> str:
        lines = ["WEBVTT", ""]
        for start, end, text in self._segments(result):
            lines += [f"{format_timestamp(start)} --> {format_timestamp(end)}", text, ""]
        return "\n".join(lines)


WRITERS: dict[str, type[ResultWriter]] = {"txt": WriteTXT, "json": WriteJSON, "srt": WriteSRT, "vtt": WriteVTT}


def get_writer(fmt: str, output_dir: str | Path, word_level: bool = False) -> ResultWriter:
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(WRITERS)}")
    return WRITERS[fmt](output_dir, word_level)
