"""The models `mkd bench` times, behind one small interface (``transcribe``/``transcribe_batch``): PyTorch
directories and ONNX exports (any variant folder) through :class:`mkdeploy.runtime.WhisperTranscriber`,
CTranslate2 directories (faster-whisper's format) through CTranslate2 itself, so all sit on one table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.errors import MkdError
from mkdeploy.models.ct2 import read_ct2_model_bin
from mkdeploy.ort import OrtOptions
from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber


class Runner:
    """Transcribe one clip at a time; ``transcribe`` returns (text, number of generated tokens)."""

    backend = ""
    variant = ""
    windows = "30"  # encoder windows in seconds
    device = "cpu"
    provider = ""

    def transcribe(self, audio: np.ndarray) -> tuple[str, int]:
        return self.transcribe_batch([audio])[0]

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[tuple[str, int]]:
        """Clips decoded together (the throughput figures)."""
        raise NotImplementedError

    def params(self) -> int:
        raise NotImplementedError


class WhisperRunner(Runner):
    """PyTorch or ONNX Runtime through :class:`mkdeploy.runtime.WhisperTranscriber`."""

    def __init__(
        self,
        path: Path,
        device: str,
        language: str,
        max_new_tokens: int | None = None,
        buckets: tuple[int, ...] | None = None,
        threads: int = 0,
        dtype: str = "auto",
        ort_options: OrtOptions | None = None,
    ):
        self.path = path
        extra: dict[str, Any] = {"options": ort_options} if ort_options is not None else {}
        self.tr = WhisperTranscriber.from_pretrained(path, device=device, threads=threads, dtype=dtype, **extra)
        self.backend, self.device, self.provider = self.tr.backend, self.tr.device, self.tr.provider or ""
        self.variant = _onnx_variant(path) if self.backend == "onnx" else str(self.tr.model.dtype).split(".")[-1]
        self.options = TranscriptionOptions(
            language=language,
            batch_size=1,
            return_timestamps=False,
            max_new_tokens=max_new_tokens,
            encoder_buckets=buckets,
        )
        self.windows = ",".join(str(b) for b in self.tr.windows(self.options).buckets)

    def transcribe_batch(self, audios):
        opts = TranscriptionOptions(**{**self.options.__dict__, "batch_size": len(audios)})
        return [(t.text, len(t.tokens) + 1) for t in self.tr.transcribe_arrays(audios, opts)]  # + end of text

    def params(self) -> int:
        if self.backend == "torch":
            return sum(p.numel() for p in self.tr.model.parameters())
        return onnx_param_count(self.path)


class CT2Runner(Runner):
    """A CTranslate2 Whisper directory (faster-whisper's format), greedy like the others."""

    backend = "ctranslate2"

    def __init__(
        self,
        path: Path,
        device: str,
        language: str,
        max_new_tokens: int | None = None,
        compute_type: str | None = None,
        threads: int = 0,
    ):
        try:
            import ctranslate2  # optional peer, only `mkd bench` with a CTranslate2 spec needs it
        except ImportError:
            raise MkdError(
                f"{path}: a CTranslate2 model, but ctranslate2 is not installed (pip install ctranslate2)"
            ) from None
        from tokenizers import Tokenizer  # only the CTranslate2 paths need it
        from transformers import WhisperFeatureExtractor  # heavy; imported on use so the core import stays light

        self.ct2 = ctranslate2
        self.path = path
        dev = "cuda" if device in ("cuda", "auto") and ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if device == "cuda" and dev != "cuda":
            raise MkdError("--device cuda: ctranslate2 sees no CUDA device")
        self.device = dev
        try:
            self.model = ctranslate2.models.Whisper(
                str(path), device=dev, compute_type=compute_type or "default", intra_threads=threads
            )
        except ValueError as exc:  # an unsupported compute type on this device
            raise MkdError(f"{path}: compute_type={compute_type}: {str(exc).splitlines()[0]}") from None
        self.variant = compute_type or "default"
        self.provider = f"ctranslate2 {ctranslate2.__version__}"
        self.fe = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.max_length = (max_new_tokens + 4) if max_new_tokens else 448
        self.prompt = (
            ["<|startoftranscript|>"]
            + ([f"<|{language}|>", "<|transcribe|>"] if self.model.is_multilingual else [])
            + ["<|notimestamps|>"]
        )

    def transcribe_batch(self, audios):
        feats = self.fe(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
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

    def params(self) -> int:
        m = read_ct2_model_bin(self.path / "model.bin")
        return int(sum(np.asarray(v).size for k, v in m.variables.items() if np.asarray(v).ndim >= 1))


def _onnx_variant(path: Path) -> str:
    return path.name if path.name in ("int8", "fp16") else "fp32"


def onnx_param_count(path: Path) -> int:
    """Weights of the encoder and merged decoder (each initializer once; the merged decoder's branches
    share theirs)."""
    import onnx  # heavy; only export and bench need it

    total = 0
    # an fp16 variant holds the unmerged pair; decoder_with_past repeats decoder_model's weights
    dec = "decoder_model_merged.onnx" if (path / "decoder_model_merged.onnx").exists() else "decoder_model.onnx"
    for name in ("encoder_model.onnx", dec):
        m = onnx.load(str(path / name), load_external_data=False)
        seen: set[str] = set()

        def walk(g, seen: set[str] = seen):
            nonlocal total
            for init in g.initializer:
                if init.name not in seen and len(init.dims) >= 1:
                    seen.add(init.name)
                    total += int(np.prod(init.dims))
            for node in g.node:
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH:
                        walk(attr.g)

        walk(m.graph)
    return total


def dir_size_mb(path: Path) -> float:
    """Size on disk of what the runtime loads (an export's root excludes its variant folders)."""
    files = [f for f in path.iterdir() if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6
