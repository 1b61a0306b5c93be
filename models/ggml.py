"""whisper.cpp models (``mkd export --format ggml``) run through whisper.cpp itself (pywhispercpp), decoding
as the other engines are scored: the bench's whisper.cpp runner and the ggml export's parity check use it."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mkdeploy.constants import CHUNK_S, MEL_FRAMES_PER_S, SAMPLE_RATE
from mkdeploy.errors import MissingExtraError, MkdError
from mkdeploy.models.window import WindowConfig

#: the model file inside a ggml export directory
GGML_FILE = "ggml-model.bin"
#: whisper.cpp's encoder positions per second of audio (1500 for 30 s): the mel frames, halved by conv2's stride
AUDIO_CTX_PER_S = MEL_FRAMES_PER_S // 2
#: bytes of a tensor of n elements, by ggml_type: F32, F16, Q8_0 (34 bytes per block of 32: fp16 scale + 32 int8)
_TENSOR_BYTES = {0: lambda n: 4 * n, 1: lambda n: 2 * n, 8: lambda n: 34 * (n // 32)}


def audio_ctx(window_s: int) -> int:
    """whisper.cpp's ``audio_ctx`` for an encoder window of ``window_s`` seconds."""
    return window_s * AUDIO_CTX_PER_S


def is_ggml_dir(path: str | Path) -> bool:
    """A directory written by ``mkd export --format ggml`` (or any holding whisper.cpp's ggml-model.bin)."""
    return (Path(path) / GGML_FILE).is_file()


class GgmlWhisper:
    """A whisper.cpp model decoding greedily without timestamps, with Whisper's non-speech suppression and
    no temperature fallback (:func:`mkdeploy.options.scoring_options`); a windowed student's clips are
    encoded in their bucket through ``audio_ctx`` (read from the export's manifest).

    Args:
        path: the export directory (or the ``.bin`` file itself).
        language: the language of multilingual models.
        threads: whisper.cpp's threads.
        max_new_tokens: cap on generated tokens per clip (None: whisper.cpp's own).
        buckets: the encoder windows in seconds (None: the export manifest's ``audio_ctx`` keys, else 30 s).

    Raises:
        MkdError: pywhispercpp is not installed, or the file does not load.
    """

    def __init__(
        self,
        path: str | Path,
        language: str = "en",
        threads: int = 2,
        max_new_tokens: int | None = None,
        buckets: tuple[int, ...] | None = None,
    ):
        self.check_installed()
        from pywhispercpp.model import Model  # optional peer: only whisper.cpp models need it

        p = Path(path)
        self.file = p / GGML_FILE if p.is_dir() else p
        if not self.file.is_file():
            raise MkdError(f"{p}: no {GGML_FILE}; write one with `mkd export MODEL OUT --format ggml`")
        manifest = self.file.parent / "mkdeploy_export.json"
        if buckets is None:
            listed = json.loads(manifest.read_text()).get("audio_ctx", {}) if manifest.exists() else {}
            buckets = tuple(int(b) for b in listed) or (CHUNK_S,)
        self.windows = WindowConfig(buckets)
        params: dict[str, Any] = dict(
            language=language,
            n_threads=threads,
            no_timestamps=True,
            single_segment=True,
            no_context=True,
            temperature_inc=0.0,
            suppress_nst=True,
            print_progress=False,
            print_realtime=False,
            print_timestamps=False,
        )
        if max_new_tokens:
            params["max_tokens"] = max_new_tokens
        self._params = params
        self._beam_models: dict[int, Any] = {}
        try:
            self.model = Model(str(self.file), redirect_whispercpp_logs_to=None, **params)
        except Exception as exc:  # pywhispercpp raises RuntimeError / its own when whisper.cpp refuses the file
            raise MkdError(
                f"{self.file}: whisper.cpp could not load it ({str(exc).strip() or type(exc).__name__})"
            ) from None
        import pywhispercpp

        self.version = getattr(pywhispercpp, "__version__", "")

    @staticmethod
    def check_installed() -> None:
        """Raise a clear error unless pywhispercpp can be imported."""
        try:
            import pywhispercpp.model  # noqa: F401
        except ImportError:
            raise MissingExtraError(
                "ggml", "whisper.cpp (a ggml model, or its export's parity check)", "pywhispercpp"
            ) from None

    def transcribe(self, audio: np.ndarray) -> tuple[str, int]:
        """(text, generated tokens) of one 16 kHz clip of at most 30 s, decoded as the engines are scored."""
        window = self.windows.bucket_for(len(audio) / SAMPLE_RATE)
        ctx = audio_ctx(window) if window < CHUNK_S else 0
        segments = self.model.transcribe(np.ascontiguousarray(audio, dtype=np.float32), audio_ctx=ctx, **self._SCORING)
        text = "".join(s.text for s in segments).strip()
        return text, _generated_tokens(self.model) + 1  # + end of text

    #: scoring's per-call parameters (pywhispercpp keeps a call's parameters for the next one)
    _SCORING: dict[str, Any] = dict(no_timestamps=True, single_segment=True, initial_prompt="")

    def segments(
        self, audio: np.ndarray, timestamps: bool = True, beam_size: int = 1, prompt: str | None = None
    ) -> list[tuple[float, float, str]]:
        """``(start, end, text)`` of a 16 kHz recording of any length, by whisper.cpp's own long-form loop (times
        as whisper.cpp gives them, unclipped).

        Args:
            audio: the samples.
            timestamps: whisper.cpp's segments with times (False: one untimed stretch per window).
            beam_size: 1 greedy, more: whisper.cpp's beam search.
            prompt: text given as previous context (whisper.cpp's ``initial_prompt``).
        """
        seconds = len(audio) / SAMPLE_RATE
        window = self.windows.bucket_for(seconds) if seconds <= CHUNK_S else CHUNK_S
        out = self._model(beam_size).transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            audio_ctx=audio_ctx(window) if window < CHUNK_S else 0,
            no_timestamps=not timestamps,
            single_segment=False,
            initial_prompt=prompt or "",
        )
        return [(s.t0 / 100, s.t1 / 100, s.text.strip()) for s in out]  # whisper.cpp counts 10 ms units

    def _model(self, beam_size: int):
        """The greedy model, or one made for beam search (whisper.cpp fixes the strategy when it loads)."""
        if beam_size <= 1:
            return self.model
        if beam_size not in self._beam_models:
            from pywhispercpp.model import Model

            params = dict(self._params, beam_search={"beam_size": beam_size, "patience": -1.0})
            self._beam_models[beam_size] = Model(
                str(self.file), params_sampling_strategy=1, redirect_whispercpp_logs_to=None, **params
            )
        return self._beam_models[beam_size]

    def transcribe_batch(self, audios) -> list[tuple[str, int]]:
        """One clip at a time: whisper.cpp's ``whisper_full`` decodes one audio per call."""
        return [self.transcribe(a) for a in audios]


def _generated_tokens(model) -> int:
    """Text tokens of the last transcription (whisper.cpp's special tokens have ids at or above eot)."""
    import _pywhispercpp as pw

    ctx = model._ctx
    eot = pw.whisper_token_eot(ctx)
    n = 0
    for i in range(pw.whisper_full_n_segments(ctx)):
        n += sum(1 for j in range(pw.whisper_full_n_tokens(ctx, i)) if pw.whisper_full_get_token_id(ctx, i, j) < eot)
    return n


def ggml_param_count(path: Path) -> int:
    """Weights in a whisper.cpp model file: the element counts in its tensor headers."""
    with open(path, "rb") as f:
        f.seek(12 * 4)
        n_mel, n_fft = struct.unpack("<2i", f.read(8))
        f.seek(4 * n_mel * n_fft, 1)
        (n_vocab,) = struct.unpack("<i", f.read(4))
        for _ in range(n_vocab):
            (length,) = struct.unpack("<i", f.read(4))
            f.seek(length, 1)
        total = 0
        while header := f.read(12):
            n_dims, name_len, ttype = struct.unpack("<3i", header)
            dims = struct.unpack(f"<{n_dims}i", f.read(4 * n_dims))
            f.seek(name_len, 1)
            count = int(np.prod(dims))
            total += count
            f.seek(_TENSOR_BYTES[ttype](count), 1)
    return total
