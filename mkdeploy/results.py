"""Public results of transcription, as dataclasses (faster-whisper's ``Segment`` / ``TranscriptionInfo``
habit). They sit in the core layer so writers and servers can use them without the runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Word:
    """One word with its time in seconds (cross-attention alignment, :mod:`mkdeploy.transcription.alignment`) and the
    decoder's mean probability of its tokens."""

    word: str
    start: float
    end: float
    probability: float


@dataclass
class Segment:
    """A stretch of transcript with its times in seconds (from Whisper's timestamp tokens); ``words`` when
    word timestamps were asked for."""

    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcription:
    """The result for one audio input.

    Attributes:
        path: source file ("" for in-memory audio).
        text: the whole transcript.
        segments: timed segments (empty when timestamps are off or the clip is silent).
        duration: seconds of audio.
        tokens: generated token ids (special tokens removed), for parity checks.
        silent: the input held no signal; nothing was decoded (Whisper invents text on silence).
        no_speech_prob: Whisper's probability of ``<|nocaptions|>`` at the start of the transcript (None
            when the no-speech gate was off or the clip was not decoded).
        avg_logprob: mean log-probability of the decoded tokens and end-of-text (openai/whisper's).
        gate: why the text is empty although audio was given: "silence" (digital silence), "vad" (the
            voice-activity detector found no speech), "no_speech" (Whisper's own no-speech test); "" otherwise.
        language: the language the clip was decoded in (a Whisper code; "en" for ``.en`` models; None when
            nothing was decoded).
        language_probability: the detector's probability of ``language`` (None when it was given, not
            detected).
        words: every word with its time (``TranscriptionOptions.word_timestamps``; empty otherwise).
    """

    path: str
    text: str
    segments: list[Segment]
    duration: float
    tokens: list[int] = field(default_factory=list)
    silent: bool = False
    no_speech_prob: float | None = None
    avg_logprob: float | None = None
    gate: str = ""
    language: str | None = None
    language_probability: float | None = None
    words: list[Word] = field(default_factory=list)

    @classmethod
    def of_silence(cls, path: str, duration: float) -> Transcription:
        """The result for digital silence: nothing decoded, as Whisper invents sentences on silence."""
        return cls(path, "", [], duration, silent=True, gate="silence")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FileFailure:
    """An input that could not be transcribed, with a one-line reason naming the file."""

    path: str
    reason: str
