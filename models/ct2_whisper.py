"""A CTranslate2 Whisper directory run by CTranslate2 itself, decoding as mkd scores every engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mkdeploy.constants import CHUNK_S, SAMPLE_RATE
from mkdeploy.lean.features import log_mel


class CT2Whisper:
    """A CTranslate2 Whisper directory (faster-whisper's format) decoding greedily without timestamps, as the
    other engines are scored (:func:`mkdeploy.options.scoring_options`): the bench's CTranslate2 runner and
    the CTranslate2 export's parity check decode through it.

    Args:
        path: the directory (model.bin, config.json, tokenizer.json; preprocessor_config.json when present).
        device: "cpu" or "cuda" ("auto": CUDA when CTranslate2 sees a device).
        compute_type: CTranslate2's compute type (None: the type the model was saved in).
        language: the language token for multilingual models.
        max_new_tokens: cap on generated tokens (None: 448 in all).
        threads: CTranslate2's intra_threads (0: its default).

    Raises:
        MkdError: ctranslate2 is not installed, or the compute type is not supported on the device.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        compute_type: str | None = None,
        language: str = "en",
        max_new_tokens: int | None = None,
        threads: int = 0,
    ):
        from mkdeploy.errors import MkdError

        try:
            import ctranslate2  # optional peer: only CTranslate2 models need it
        except ImportError:
            raise MkdError(
                f"{path}: a CTranslate2 model, but ctranslate2 is not installed (pip install ctranslate2)"
            ) from None
        from tokenizers import Tokenizer  # only the CTranslate2 paths need it

        self.ct2, self.path = ctranslate2, Path(path)
        dev = "cuda" if device in ("cuda", "auto") and ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if device == "cuda" and dev != "cuda":
            raise MkdError("--device cuda: ctranslate2 sees no CUDA device")
        self.device = dev
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.path), device=dev, compute_type=compute_type or "default", intra_threads=threads
            )
        except ValueError as exc:  # an unsupported compute type on this device
            raise MkdError(f"{path}: compute_type={compute_type}: {str(exc).splitlines()[0]}") from None
        self.tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.max_length = (max_new_tokens + 4) if max_new_tokens else 448
        self.prompt = (
            ["<|startoftranscript|>"]
            + ([f"<|{language}|>", "<|transcribe|>"] if self.model.is_multilingual else [])
            + ["<|notimestamps|>"]
        )

    def features(self, audios) -> np.ndarray:
        """Log-mel features of 16 kHz clips in Whisper's 30 s window (numpy, as faster-whisper computes them)."""
        return log_mel(list(audios), self.model.n_mels, CHUNK_S * SAMPLE_RATE)

    def transcribe_batch(self, audios) -> list[tuple[str, int]]:
        """(text, generated tokens + end-of-text) per 16 kHz clip of at most 30 s."""
        feats = self.features(audios)
        res = self.model.generate(
            self.ct2.StorageView.from_array(np.ascontiguousarray(feats)),
            [self.prompt] * len(audios),
            beam_size=1,
            max_length=self.max_length,
        )
        out = []
        for r in res:
            ids = r.sequences_ids[0]
            out.append((self.tok.decode(ids, skip_special_tokens=True).strip(), len(ids) + 1))
        return out
