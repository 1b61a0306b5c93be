"""`mkd export --format ct2`: a model as CTranslate2 loads it, so faster-whisper and speaches serve a student.

The conversion is CTranslate2's own (``ctranslate2.converters.TransformersConverter``, what
``ct2-transformers-converter`` runs). Around it, what those converters get wrong for the students mkd makes
(issue 48):

- **alignment heads**: the converter copies ``generation_config.alignment_heads`` into config.json, and
  faster-whisper's ``word_timestamps=True`` reads them. A pruned student inherits its teacher's list, which
  can name decoder layers it no longer has (5 of tiny.en's 8 heads sit in layer 3; faster-whisper #688). Such a
  list is replaced by the heads whose cross-attention best follows time on the parity clips
  (:func:`mkdeploy.transcription.alignment.choose_alignment_heads`), and the manifest says so.
- **offline files**: tokenizer.json and preprocessor_config.json are copied beside model.bin; without them
  faster-whisper downloads openai/whisper-tiny's at load time (fails offline; #582: wrong mel bins).
- **short encoder windows**: CTranslate2 always encodes Whisper's 30 s window, so a windowed student runs
  there at 30 s: it transcribes as it does with ``--encoder-buckets 30``, without the speed its windows buy.
  The export warns and the manifest records it (``warnings``); the transcripts are checked as they will be.

Parity, as for ONNX: the parity clips decoded greedily by CTranslate2 itself against the PyTorch source
(:func:`mkdeploy.options.scoring_options`, at 30 s), texts recorded in the manifest; fp32 must match.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from mkdeploy.audio import reference_clips
from mkdeploy.errors import ExportError, MkdError, ModelError
from mkdeploy.exporters.target import TargetManifest, student_alignment_heads
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.ct2_whisper import CT2Whisper
from mkdeploy.models.dirs import check_model_dir, hash_model_dir, is_onnx_dir
from mkdeploy.models.window import model_buckets
from mkdeploy.options import scoring_options
from mkdeploy.transcription.runtime import WhisperTranscriber

#: CTranslate2's weight types `--quantization` takes, and the compute type each is checked with on CPU
QUANTIZATIONS = {"int8": "int8", "int8_float16": "int8", "float16": "float32", "float32": "float32"}
MANIFEST = "mkdeploy_export.json"
#: files faster-whisper reads beside model.bin (it downloads them when they are missing)
SIDE_FILES = ("tokenizer.json", "preprocessor_config.json")


@dataclass
class CT2Manifest(TargetManifest):
    """Written to OUT/mkdeploy_export.json (:class:`~mkdeploy.exporters.target.TargetManifest`'s fields); the
    alignment heads are also written to config.json, where faster-whisper reads them."""

    format: str = "ctranslate2"
    quantization: str = "int8"


def export_ct2(
    model_dir: str | Path,
    out: str | Path,
    quantization: str = "int8",
    force: bool = False,
    samples: list[np.ndarray] | None = None,
    validate: bool = True,
) -> CT2Manifest:
    """Convert a HF Whisper directory to CTranslate2 and check its transcripts against PyTorch.

    Args:
        model_dir: an imported teacher or a merged student (PyTorch).
        out: the export directory, built in a temporary directory and renamed into place.
        quantization: "int8", "int8_float16", "float16" or "float32" (CTranslate2's weight types).
        force: replace an existing ``out``.
        samples: 16 kHz clips for parity and head measurement (default: the two committed parity clips).
        validate: check the transcripts; a float32 export that differs from PyTorch fails.

    Returns:
        the manifest, also written to OUT/mkdeploy_export.json.

    Raises:
        MkdError: an unknown quantization, ctranslate2 missing, an ONNX directory given.
        ExportError: the conversion failed, or float32 transcripts differ from PyTorch's.
    """
    if quantization not in QUANTIZATIONS:
        raise MkdError(f"--quantization {quantization}: choose one of {', '.join(QUANTIZATIONS)}")
    model_dir = check_model_dir(model_dir)
    if is_onnx_dir(model_dir):
        raise ModelError(f"{model_dir}: an ONNX export; give the PyTorch model directory")
    try:
        from ctranslate2.converters import TransformersConverter  # optional peer: only this export needs it
    except ImportError:
        raise MkdError("--format ct2 needs ctranslate2: pip install ctranslate2") from None
    t0 = time.perf_counter()
    audios = samples or [a for a, _ in reference_clips()]
    tr = WhisperTranscriber.from_pretrained(model_dir, device="cpu")  # one load: windows, heads and parity
    model = tr.model
    manifest = CT2Manifest(str(model_dir.resolve()), hash_model_dir(model_dir), quantization=quantization)
    if model_buckets(model.config):
        manifest.warnings.append(
            f"{model_dir.name} is trained for encoder windows {model_buckets(model.config)} s; CTranslate2 "
            "encodes Whisper's 30 s window, so it runs there at 30 s (as with --encoder-buckets 30), without "
            "the speed of its windows"
        )
    heads, manifest.heads_source = student_alignment_heads(tr, audios)
    manifest.alignment_heads = heads

    with atomic_output_dir(out, force=force) as tmp:
        staged = tmp / ".source"
        # links to the source's files (no copy of the weights), the generation config rewritten with the heads
        shutil.copytree(model_dir.resolve(), staged, copy_function=os.symlink)  # links resolve from anywhere
        gen = json.loads((staged / "generation_config.json").read_text())
        gen["alignment_heads"] = heads
        (staged / "generation_config.json").unlink()
        (staged / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        try:
            converter = TransformersConverter(str(staged), copy_files=[f for f in SIDE_FILES if (staged / f).exists()])
            converter.convert(str(tmp / "model"), quantization=quantization, force=True)
        except Exception as exc:  # the converter raises ValueError / RuntimeError / its own by cause
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"{model_dir}: CTranslate2 conversion failed ({first})") from None
        shutil.rmtree(staged)
        for f in (tmp / "model").iterdir():
            f.rename(tmp / f.name)
        (tmp / "model").rmdir()
        if validate:
            _check_parity(manifest, tr, model_dir, tmp, audios)
        manifest.seconds = round(time.perf_counter() - t0, 1)
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def _check_parity(
    manifest: CT2Manifest, tr: WhisperTranscriber, model_dir: Path, export: Path, audios: list[np.ndarray]
) -> None:
    """CTranslate2's greedy texts of the clips against PyTorch's (at Whisper's 30 s window, what CTranslate2
    encodes); float32 must match exactly."""
    opts = replace(scoring_options("en", batch_size=len(audios)), encoder_buckets=(30,))
    ref = [t.text for t in tr.transcribe_arrays(audios, opts)]
    got = [t for t, _ in CT2Whisper(export, "cpu", QUANTIZATIONS[manifest.quantization]).transcribe_batch(audios)]
    manifest.record_parity("ctranslate2", ref, got, audios)
    if manifest.quantization == "float32" and manifest.identical < len(ref):
        raise ExportError(
            f"{model_dir}: the CTranslate2 float32 export transcribes {len(ref) - manifest.identical} of "
            f"{len(ref)} parity clips differently from PyTorch; re-export with --no-validate to inspect it"
        )
