"""`mkd transcribe` on a model exported for another server (``mkd export --format ct2 / ggml``), run by that
server's own engine, so what a user reads is what faster-whisper or whisper.cpp will say.

- **CTranslate2** (:class:`mkdeploy.models.ct2_whisper.CT2Whisper`): the audio in consecutive 30 s windows, each
  decoded with Whisper's timestamp tokens (``<|0.00|>`` ... ``<|30.00|>``, 0.02 s apart) and cut into
  segments at each pair, as openai/whisper's tokenizer lays them out.
- **whisper.cpp** (:class:`mkdeploy.models.ggml.GgmlWhisper`): whisper.cpp's own long-form loop and segments.

What these engines do not do here is refused with the fix named, never silently dropped: word timestamps,
VAD and batched long-form run on the PyTorch or ONNX model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mkdeploy.audio import load_audio_with_info
from mkdeploy.constants import CHUNK_S, SAMPLE_RATE
from mkdeploy.errors import AudioError, MkdError
from mkdeploy.lean.segments import inside, next_seek, window_spans
from mkdeploy.models.ct2_whisper import CT2Whisper
from mkdeploy.models.dirs import is_ct2_dir
from mkdeploy.models.ggml import GgmlWhisper, is_ggml_dir
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import FileFailure, Segment, Transcription


def is_exported_dir(path: str | Path) -> bool:
    """A model directory for another server: CTranslate2 (faster-whisper) or whisper.cpp."""
    return is_ct2_dir(path) or is_ggml_dir(path)


class ExportedTranscriber:
    """Transcribe files with a CTranslate2 or whisper.cpp export, through the engine it was exported for.

    Args:
        path: the export directory.
        language: the language of a multilingual model (None: English for CTranslate2, whisper.cpp's
            detection for whisper.cpp).
        device: "cpu", "cuda" or "auto" (CTranslate2; whisper.cpp runs where its wheel was built for).
        threads: the engine's CPU threads (0: its default).

    Raises:
        MkdError: not an export directory, or its engine is not installed.
    """

    def __init__(self, path: str | Path, language: str | None = None, device: str = "auto", threads: int = 0):
        self.path = Path(path)
        self.ct2: CT2Whisper | None = None
        self.ggml: GgmlWhisper | None = None
        if is_ggml_dir(self.path):
            self.ggml = GgmlWhisper(self.path, language or "auto", threads or 2)
            self.backend, self.device, self.provider = "whisper.cpp", "cpu", f"pywhispercpp {self.ggml.version}"
        elif is_ct2_dir(self.path):
            self.ct2 = CT2Whisper(self.path, device, language=language or "en", threads=threads)
            self.backend, self.device = "ctranslate2", self.ct2.device
            self.provider = f"ctranslate2 {self.ct2.ct2.__version__}"
        else:
            raise MkdError(f"{path}: neither a CTranslate2 nor a whisper.cpp export (mkd export --format ct2/ggml)")

    def transcribe_files(
        self,
        paths: Sequence[str | Path],
        options: TranscriptionOptions,
        on_progress: Callable[[int], None] | None = None,
    ) -> tuple[list[Transcription], list[FileFailure]]:
        """Transcribe files one at a time; unreadable ones are reported, never fatal to the rest.

        Args:
            paths: audio files.
            options: decoding options; timestamps, beams (CTranslate2) and the initial prompt are honoured.
            on_progress: called with 1 after each file.

        Returns:
            (transcriptions of the readable files in input order, failures with one-line reasons).

        Raises:
            MkdError: an option this engine does not run here (word timestamps, VAD, batched long-form).
        """
        refused = [
            (options.word_timestamps, "word timestamps"),
            (options.vad_filter, "--vad"),
            (options.batched_long_form, "--batched"),
        ]
        for on, what in refused:
            if on:
                raise MkdError(
                    f"{self.path}: {what} with a {self.backend} export: give the PyTorch or ONNX model it was "
                    "exported from"
                )
        done: list[Transcription] = []
        failures: list[FileFailure] = []
        for p in paths:
            try:
                audio, _ = load_audio_with_info(p)
            except AudioError as exc:
                failures.append(FileFailure(str(p), str(exc)))
            else:
                segments = self._segments(audio, options)
                text = " ".join(s.text for s in segments if s.text).strip()
                kept = segments if options.return_timestamps else []  # as the runtime: no times, no segments
                done.append(Transcription(str(p), text, kept, round(len(audio) / SAMPLE_RATE, 3)))
            if on_progress:
                on_progress(1)
        return done, failures

    def _segments(self, audio: np.ndarray, options: TranscriptionOptions) -> list[Segment]:
        if self.ggml is not None:
            spans = self.ggml.segments(audio, options.return_timestamps, options.num_beams, options.initial_prompt)
            return [Segment(s, e, t) for s, e, t in inside(spans, round(len(audio) / SAMPLE_RATE, 2))]
        assert self.ct2 is not None
        segments: list[Segment] = []
        seek = 0  # openai/whisper's: the sample the next window starts at
        while seek < len(audio):
            window = audio[seek : seek + CHUNK_S * SAMPLE_RATE]
            t0 = seek / SAMPLE_RATE
            spans, consumed = ct2_window_segments(self.ct2, window, options)
            segments += [Segment(round(t0 + s, 2), round(t0 + e, 2), text) for s, e, text in spans]
            seek = next_seek(seek, len(window), consumed, SAMPLE_RATE)
        return segments


def ct2_window_segments(
    whisper: CT2Whisper, window: np.ndarray, options: TranscriptionOptions
) -> tuple[list[tuple[float, float, str]], float]:
    """``([(start, end, text), ...], seconds consumed)`` of one window of at most 30 s decoded by CTranslate2.

    With timestamps, the decoder prompt leaves out ``<|notimestamps|>`` and the output is cut into segments
    at each pair of timestamp tokens ((id - ``<|0.00|>``'s id) * 0.02 s), as openai/whisper's
    ``transcribe`` does: when the output does not end with a lone timestamp, the text after the last pair is
    a sentence the window cut, so the window counts as consumed only up to that pair and the next window
    starts there (:func:`mkdeploy.lean.segments.window_spans`). Without timestamps, the window is one
    segment, consumed whole.
    """
    tok = whisper.tok
    prompt = list(whisper.prompt)
    if options.return_timestamps:
        prompt.remove("<|notimestamps|>")
    prompt_ids = [tok.token_to_id(t) for t in prompt]
    if options.initial_prompt:
        # openai/whisper gives the prompt at most half of the 448-token context
        previous = tok.encode(" " + options.initial_prompt.strip(), add_special_tokens=False).ids[-223:]
        prompt_ids = [tok.token_to_id("<|startofprev|>"), *previous, *prompt_ids]
    feats = whisper.features([window])
    ids = whisper.model.generate(
        whisper.ct2.StorageView.from_array(np.ascontiguousarray(feats)),
        [prompt_ids],
        beam_size=options.num_beams,
        max_length=448,
    )[0].sequences_ids[0]
    duration = round(len(window) / SAMPLE_RATE, 2)
    if not options.return_timestamps:
        return [(0.0, duration, tok.decode(ids, skip_special_tokens=True).strip())], duration
    return window_spans(ids, tok.token_to_id("<|0.00|>"), tok.decode, duration)
