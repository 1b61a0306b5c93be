"""The models `mkd bench` times, behind one small interface (``transcribe``/``transcribe_batch``): PyTorch
directories and ONNX exports (any variant folder) through :class:`mkdeploy.transcription.runtime.WhisperTranscriber`,
CTranslate2 directories (faster-whisper's format) through CTranslate2 itself and whisper.cpp exports through
whisper.cpp (pywhispercpp), so all sit on one table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mkdeploy.lean.sessions import OrtOptions
from mkdeploy.models.ct2 import read_ct2_model_bin
from mkdeploy.models.ct2_whisper import CT2Whisper
from mkdeploy.models.ggml import GgmlWhisper, ggml_param_count
from mkdeploy.options import scoring_options


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
    """PyTorch or ONNX Runtime through :class:`mkdeploy.transcription.runtime.WhisperTranscriber`."""

    tr: Any  # the WhisperTranscriber (LeanRunner: the OnnxTranscriber)

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
        from mkdeploy.transcription.runtime import WhisperTranscriber  # torch: imported only for these models

        self.path = path
        extra: dict[str, Any] = {"options": ort_options} if ort_options is not None else {}
        self.tr = WhisperTranscriber.from_pretrained(path, device=device, threads=threads, dtype=dtype, **extra)
        self.backend, self.device, self.provider = self.tr.backend, self.tr.device, self.tr.provider or ""
        self.variant = _onnx_variant(path) if self.backend == "onnx" else str(self.tr.model.dtype).split(".")[-1]
        self._scoring(language, max_new_tokens, buckets)

    def _scoring(self, language: str, max_new_tokens: int | None, buckets: tuple[int, ...] | None) -> None:
        """The bench's decoding options (the scores' greedy configuration) and the windows they use."""
        self.options = replace(
            scoring_options(language, batch_size=1), max_new_tokens=max_new_tokens, encoder_buckets=buckets
        )
        self.windows = ",".join(str(b) for b in self.tr.windows(self.options).buckets)

    def transcribe_batch(self, audios):
        opts = replace(self.options, batch_size=len(audios))
        return [(t.text, len(t.tokens) + 1) for t in self.tr.transcribe_arrays(audios, opts)]  # + end of text

    def params(self) -> int:
        if self.backend == "torch":
            return sum(p.numel() for p in self.tr.model.parameters())
        return onnx_param_count(self.path)


class LeanRunner(WhisperRunner):
    """An ONNX export on the torch-free runtime (:class:`mkdeploy.lean.transcriber.OnnxTranscriber`): the
    process running it never imports torch, transformers or optimum, so its RSS is the base install's."""

    backend = "onnx-lean"

    def __init__(
        self,
        path: Path,
        device: str,
        language: str,
        max_new_tokens: int | None = None,
        buckets: tuple[int, ...] | None = None,
        threads: int = 0,
        ort_options: OrtOptions | None = None,
    ):
        from mkdeploy.lean.transcriber import OnnxTranscriber

        self.path = path
        self.tr = OnnxTranscriber.from_pretrained(path, device, threads, options=ort_options)
        self.device, self.provider = self.tr.device, self.tr.provider
        self.variant = _onnx_variant(path)
        self._scoring(language, max_new_tokens, buckets)

    def params(self) -> int:
        return onnx_param_count(self.path)


class CT2Runner(Runner):
    """A CTranslate2 Whisper directory (faster-whisper's format), greedy like the others
    (:class:`mkdeploy.models.ct2_whisper.CT2Whisper`)."""

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
        self.path = path
        self.whisper = CT2Whisper(path, device, compute_type, language, max_new_tokens, threads)
        self.device = self.whisper.device
        self.variant = compute_type or "default"
        self.provider = f"ctranslate2 {self.whisper.ct2.__version__}"

    def transcribe_batch(self, audios):
        return self.whisper.transcribe_batch(audios)

    def params(self) -> int:
        m = read_ct2_model_bin(self.path / "model.bin")
        return int(sum(np.asarray(v).size for k, v in m.variables.items() if np.asarray(v).ndim >= 1))


class GgmlRunner(Runner):
    """A whisper.cpp export (``mkd export --format ggml``) through whisper.cpp itself
    (:class:`mkdeploy.models.ggml.GgmlWhisper`): greedy, a windowed student's clips in their bucket."""

    backend = "whisper.cpp"

    def __init__(
        self,
        path: Path,
        language: str,
        max_new_tokens: int | None = None,
        buckets: tuple[int, ...] | None = None,
        threads: int = 0,
    ):
        self.path = path
        self.whisper = GgmlWhisper(path, language, threads or 2, max_new_tokens, buckets)
        self.windows = ",".join(str(b) for b in self.whisper.windows.buckets)
        manifest = path / "mkdeploy_export.json"
        self.variant = json.loads(manifest.read_text()).get("quantization", "") if manifest.exists() else ""
        self.provider = f"pywhispercpp {self.whisper.version}".strip()

    def transcribe_batch(self, audios):
        return self.whisper.transcribe_batch(audios)

    def params(self) -> int:
        return ggml_param_count(self.whisper.file)


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
