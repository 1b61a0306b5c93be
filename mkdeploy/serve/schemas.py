"""Request and response models of the OpenAI audio API (its ``Transcription``, ``TranscriptionVerbose``,
``TranscriptionSegment``, ``Model``), as pydantic classes (speaches' ``api_types`` habit)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from mkdeploy.lean import greedy
from mkdeploy.results import Transcription

RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")


class TranscriptionJson(BaseModel):
    text: str


class TranscriptionSegment(BaseModel):
    """A timed segment. Whisper's scores are measured per clip here (the no-speech gate's pass), so each
    segment of a clip carries the clip's ``avg_logprob`` and ``no_speech_prob``."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionWord(BaseModel):
    """A word with its times (``timestamp_granularities[]=word``), as OpenAI shapes it."""

    word: str
    start: float
    end: float


class TranscriptionVerbose(BaseModel):
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[TranscriptionSegment] | None = None
    words: list[TranscriptionWord] | None = None

    @classmethod
    def from_result(
        cls,
        r: Transcription,
        language: str,
        temperature: float,
        task: str = "transcribe",
        granularities: tuple[str, ...] = ("segment",),
    ) -> TranscriptionVerbose:
        """OpenAI's verbose_json: ``segments`` when "segment" is among ``granularities`` (its default),
        ``words`` when "word" is."""
        segs = r.segments or []
        return cls(
            task=task,  # type: ignore[arg-type]  # the routers pass "transcribe" or "translate" only
            words=[TranscriptionWord(word=w.word.strip(), start=w.start, end=w.end) for w in r.words]
            if "word" in granularities
            else None,
            language=language,
            duration=round(r.duration, 3),
            text=r.text,
            segments=[
                TranscriptionSegment(
                    id=i,
                    seek=int(s.start * 100),  # openai/whisper's seek counts 10 ms mel frames
                    start=s.start,
                    end=s.end,
                    text=s.text,
                    tokens=s.tokens,
                    temperature=temperature,
                    avg_logprob=r.avg_logprob if r.avg_logprob is not None else 0.0,
                    compression_ratio=text_compression_ratio(s.text),
                    no_speech_prob=r.no_speech_prob if r.no_speech_prob is not None else 0.0,
                )
                for i, s in enumerate(segs)
            ]
            if "segment" in granularities
            else None,
        )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mkdeploy"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading", "failed"]
    model: str
    detail: str | None = None


def text_compression_ratio(text: str) -> float:
    """:func:`mkdeploy.lean.greedy.text_compression_ratio`, rounded for the response."""
    return round(greedy.text_compression_ratio(text), 4)
