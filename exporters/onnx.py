"""`mkd export`: a Hugging Face Whisper directory to a validated ONNX export.

Layout of an export directory (it loads as is with optimum's ``ORTModelForSpeechSeq2Seq``)::

    OUT/encoder_model.onnx, OUT/decoder_model_merged.onnx   fp32, with config and processor files
    OUT/int8/...                                            dynamic int8 (CPU), when asked for
    OUT/fp16/...                                            fp16 weights and activations (GPU), when asked for
    OUT/mkdeploy_export.json                                the manifest (source hash, opset, parity)

Only the merged decoder is kept: it serves the first step and the cached steps through one graph, so the
unmerged pair optimum also writes would double the size on disk for nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mkdeploy.audio import reference_clips
from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.errors import ExportError, MkdError, ModelError
from mkdeploy.exporters.int8 import (
    AUTO_SCHEMES,
    ONNX_FILES,
    SCHEMES,
    get_scheme,
    quantize_scheme,
)
from mkdeploy.exporters.int8_choice import choose_int8, scores_json
from mkdeploy.exporters.onnx_graph import untie_output_projection, windowed_encoder_onnx_config
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.dirs import check_model_dir, hash_model_dir, is_onnx_dir
from mkdeploy.models.window import ONNX_DYNAMIC_FRAMES_ATTR, windowed_encoder_class
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber
from mkdeploy.version import version_info

logger = logging.getLogger(__name__)

MANIFEST = "mkdeploy_export.json"
TASK = "automatic-speech-recognition-with-past"


@dataclass
class ExportOptions:
    """What to export and how strictly to check it.

    Attributes:
        quantize: "int8" adds a dynamically quantised variant for CPU.
        int8_scheme: "auto" measures the batch-invariant schemes (:data:`~mkdeploy.exporters.int8.AUTO_SCHEMES`),
            "auto-all" every scheme of :data:`~mkdeploy.exporters.int8.SCHEMES`, on the calibration audio
            and ships the fastest within ``max_wer_delta`` of fp32; or one scheme's name (no measurement). Per-tensor scales moved the demo's students by up to 3.5 WER points either
            way (benchmarks/results/demo_report.md): the choice is measured, not assumed.
        max_wer_delta: the int8 budget, WER points over the fp32 export on the calibration audio.
        fp16: add an fp16 variant for GPU (inputs and outputs stay fp32).
        opset: ONNX opset (None: optimum's default for Whisper).
        atol: tolerance of optimum's output check (encoder and decoder outputs against PyTorch).
        validate: run the parity checks; an fp32 export whose greedy tokens differ from PyTorch's fails.
    """

    quantize: str | None = None
    int8_scheme: str = "auto"
    max_wer_delta: float = 0.3
    fp16: bool = False
    opset: int | None = None
    atol: float = 1e-3
    validate: bool = True


@dataclass
class VariantParity:
    """Agreement of one variant with the PyTorch source on the sample audio.

    Attributes:
        variant: "fp32", "int8" or "fp16".
        clips: number of sample clips.
        identical: clips whose greedy tokens are identical to PyTorch's.
        token_agreement: share of PyTorch's tokens reproduced position by position.
        max_abs_logit_diff: largest difference of first-step logits (None when not measured).
        provider: the ONNX Runtime provider that ran the check.
    """

    variant: str
    clips: int
    identical: int
    token_agreement: float
    max_abs_logit_diff: float | None
    provider: str


@dataclass
class ExportManifest:
    """Written to OUT/mkdeploy_export.json."""

    source: str
    source_sha256: str
    opset: int
    task: str
    variants: dict[str, dict] = field(default_factory=dict)
    parity: list[dict] = field(default_factory=list)
    sample_audio: str = ""
    seconds: float = 0.0
    #: what exported it: the package version and, from a git checkout, the commit
    mkdeploy: dict = field(default_factory=version_info)


def _opset_of(path: Path) -> int:
    import onnx  # heavy; only export needs it

    m = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


def copy_side_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".onnx" and not f.name.endswith(".onnx_data") and f.name != MANIFEST:
            shutil.copy(f, dst / f.name)


FP16_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")


def convert_fp16(src: Path, dst: Path, side_files: Path) -> None:
    """fp16 weights and activations, fp32 at the graphs' inputs and outputs (so the runtime feeds the same
    features). Normalisations and Softmax stay fp32 via ORT's block list defaults.

    The unmerged decoder pair is converted, not the merged decoder: converting the merged graph left an If
    branch returning an outer-scope value directly, which ONNX Runtime refuses to load (seen on an H100).
    ``ORTModelForSpeechSeq2Seq`` loads the pair when no merged decoder is present.
    """
    import onnx  # heavy; only export needs it
    from onnxruntime.transformers.float16 import convert_float_to_float16  # heavy; only export needs it

    dst.mkdir(parents=True, exist_ok=True)
    for name in FP16_FILES:
        model = onnx.load(str(src / name if (src / name).exists() else side_files / name))
        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        onnx.save(model, str(dst / name))
    copy_side_files(side_files, dst)


def _sample_audio(samples: Sequence[np.ndarray] | None) -> tuple[list[np.ndarray], str]:
    if samples:
        return list(samples), "given"
    # committed clips: the export never needs a speech engine, so a plain `pip install mkdeploy` can export
    return [audio for audio, _ in reference_clips()], "committed speech clips (mkdeploy/assets/parity)"


def _calibration(
    calibration: Sequence[tuple[np.ndarray, str | None]] | None, samples: Sequence[np.ndarray] | None
) -> tuple[list[np.ndarray], list[str] | None, str]:
    """The int8 calibration clips, their references (None when any is missing) and how to name them:
    ``calibration`` when given, else the parity clips (the committed ones carry their transcripts)."""
    if calibration:
        texts = [t for _, t in calibration]
        refs = None if any(t is None for t in texts) else [str(t) for t in texts]
        return [a for a, _ in calibration], refs, f"{len(calibration)} calibration clips"
    if samples:
        return list(samples), None, f"{len(samples)} parity clips"
    clips = reference_clips()
    return [a for a, _ in clips], [t for _, t in clips], "the committed parity clips"


def _first_step_logits(model, features, start_ids):
    import torch  # heavy; only export needs it

    # Inputs must live where the model runs: with IOBinding on CUDA a host tensor is bound as is and
    # cuDNN fails on it (seen on an H100: CUDNN_BACKEND_API_FAILED in the first Conv).
    dev = getattr(model, "device", torch.device("cpu"))
    with torch.inference_mode():
        out = model(input_features=features.to(dev), decoder_input_ids=start_ids.to(dev))
    return out.logits.float().cpu().numpy()


def check_parity(
    source: Path, export_dir: Path, variant: str, audios: Sequence[np.ndarray], reference=None, device: str = "cpu"
) -> tuple[VariantParity, list[list[int]]]:
    """Greedy tokens and first-step logits of an ONNX variant against the PyTorch model.

    Args:
        source: the PyTorch model directory.
        export_dir: the variant's directory.
        variant: its name, for the report.
        audios: 16 kHz clips.
        reference: PyTorch's tokens per clip (computed when None).
        device: where ONNX Runtime runs ("cpu" or "cuda").

    Returns:
        (parity, PyTorch's tokens) so later variants reuse the reference.
    """
    import torch  # heavy; only export needs it

    # the parity clips are English; a multilingual model is told so, as detection is not what parity tests
    greedy = TranscriptionOptions(language="en", return_timestamps=False, num_beams=1, batch_size=len(audios))
    pt = WhisperTranscriber.from_pretrained(source, backend="torch", device="cpu")
    if reference is None:
        reference = [t.tokens for t in pt.transcribe_arrays(audios, greedy)]
    ort = WhisperTranscriber.from_pretrained(export_dir, backend="onnx", device=device)
    ours = [t.tokens for t in ort.transcribe_arrays(audios, greedy)]
    identical = sum(a == b for a, b in zip(ours, reference))
    total = sum(len(r) for r in reference) or 1
    agree = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(ours, reference)) / total
    feats = pt.processor.feature_extractor(
        list(audios[:1]), sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    start = torch.tensor([[pt.model.generation_config.decoder_start_token_id]])
    diff = float(np.abs(_first_step_logits(pt.model, feats, start) - _first_step_logits(ort.model, feats, start)).max())
    return VariantParity(variant, len(audios), identical, round(agree, 4), diff, ort.provider or ""), reference


def _optimum_export(model_dir: Path, raw: Path, options: ExportOptions) -> None:
    """optimum's export into ``raw``, its failures as one-line :class:`ExportError`."""
    import torch  # heavy; only export needs it
    from optimum.exporters.onnx import main_export  # heavy; only export needs it

    try:
        with warnings.catch_warnings():
            # tracing Whisper emits TracerWarnings about shape checks it folds; they are expected
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # the encoder is traced through the windowed forward, so its frame axis stays dynamic and
            # one graph serves every encoder bucket (models/window.py); at 30 s it computes what
            # Hugging Face's forward does, which optimum's output check confirms
            with windowed_encoder_class():
                main_export(
                    str(model_dir),
                    raw,
                    task=TASK,
                    opset=options.opset,
                    atol=options.atol,
                    do_validation=options.validate,
                    local_files_only=True,
                    library_name="transformers",
                    custom_onnx_configs={"encoder_model": windowed_encoder_onnx_config(model_dir)},
                )
    except Exception as exc:  # optimum raises ValueError / AtolError / its own export errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{model_dir}: ONNX export failed ({first})") from None


def _make_variants(raw: Path, tmp: Path, options: ExportOptions, calibration, samples, device: str):
    """fp32 (the export itself), then int8 and fp16 when asked for; also what the int8 choice measured."""
    variants: dict[str, Path] = {"fp32": tmp}
    int8_info: dict[str, Any] = {}
    if options.quantize == "int8":
        name = options.int8_scheme
        if name in ("auto", "auto-all"):
            audios, refs, what = _calibration(calibration, samples)
            candidates = list(AUTO_SCHEMES if name == "auto" else SCHEMES)
            chosen, name, scores, why = choose_int8(
                tmp, tmp / ".int8", audios, refs, options.max_wer_delta, candidates, copy_side_files, device
            )
            chosen.rename(tmp / "int8")
            shutil.rmtree(tmp / ".int8")
            int8_info = {"scheme": name, "why": why, "calibration": what, "schemes": scores_json(scores)}
        else:
            given = get_scheme(name)
            clips = _calibration(calibration, samples)[0] if given.needs_calibration else None
            quantize_scheme(tmp, tmp / "int8", given, clips)
            copy_side_files(tmp, tmp / "int8")
            int8_info = {"scheme": name, "why": "given (--int8-scheme)"}
        chosen_scheme = get_scheme(name)
        int8_info["scales"] = (
            f"decoder blockwise ({chosen_scheme.block_size} weights per scale), encoder {chosen_scheme.encoder}"
            if chosen_scheme.blockwise
            else ("per-channel" if chosen_scheme.per_channel else "per-tensor")
        )
        int8_info["batch_invariant"] = chosen_scheme.batch_invariant
        if not chosen_scheme.batch_invariant:
            int8_info["note"] = (
                "dynamic int8: activation scales come from the whole batch, so a clip's transcript can change "
                "with the clips decoded beside it"
            )
        variants["int8"] = tmp / "int8"
    if options.fp16:
        convert_fp16(raw, tmp / "fp16", tmp)
        variants["fp16"] = tmp / "fp16"
    return variants, int8_info


def _check_variants(manifest: ExportManifest, model_dir: Path, variants: dict[str, Path], samples, device: str) -> None:
    """Token parity of every variant against PyTorch, recorded in the manifest; an fp32 export that differs
    is refused (nothing is written)."""
    audios, what = _sample_audio(samples)
    manifest.sample_audio = f"{len(audios)} clips, {what}"
    reference = None
    for name, d in variants.items():
        if name == "fp16" and device != "cuda":
            manifest.parity.append({"variant": "fp16", "skipped": "fp16 is checked on CUDA only"})
            continue
        parity, reference = check_parity(model_dir, d, name, audios, reference, device=device)
        manifest.parity.append(asdict(parity))
        if name == "fp32" and parity.identical != parity.clips:
            raise ExportError(
                f"{model_dir}: fp32 ONNX greedy tokens differ from PyTorch on "
                f"{parity.clips - parity.identical} of {parity.clips} clips; nothing written"
            )


def _export_fp32(model_dir: Path, raw: Path, tmp: Path, options: ExportOptions) -> None:
    """optimum's export into ``raw``; the fp32 graphs (output projection untied) and side files into ``tmp``."""
    _optimum_export(model_dir, raw, options)
    for name in ONNX_FILES:
        shutil.move(raw / name, tmp / name)
    untie_output_projection(tmp / "decoder_model_merged.onnx")
    config = json.loads((raw / "config.json").read_text())
    config[ONNX_DYNAMIC_FRAMES_ATTR] = True
    (raw / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    copy_side_files(raw, tmp)


def export_onnx(
    model_dir: str | Path,
    out: str | Path,
    options: ExportOptions | None = None,
    force: bool = False,
    samples: Sequence[np.ndarray] | None = None,
    device: str = "cpu",
    calibration: Sequence[tuple[np.ndarray, str | None]] | None = None,
) -> ExportManifest:
    """Export a HF Whisper directory to ONNX (encoder + merged decoder with past key values).

    Args:
        model_dir: HF Whisper directory (an imported teacher or a merged student).
        out: the export directory; built in a temporary directory and renamed into place.
        options: variants, opset and validation.
        force: replace an existing ``out``.
        samples: 16 kHz clips for the token parity check (default: two committed speech clips).
        device: where the parity check runs ONNX Runtime (fp16 is checked only on CUDA).
        calibration: (clip, transcript or None) pairs the int8 schemes are measured on (``int8_scheme``
            "auto"); default: the parity clips.

    Returns:
        the manifest, also written to OUT/mkdeploy_export.json.

    Raises:
        ExportError: optimum's output check or the fp32 token check failed.
    """
    options = options or ExportOptions()
    model_dir = check_model_dir(model_dir)
    if is_onnx_dir(model_dir):
        raise ModelError(f"{model_dir}: already an ONNX export; give the PyTorch model directory")
    if options.quantize not in (None, "int8"):
        raise MkdError(f"--quantize {options.quantize}: only int8 is supported")
    if options.int8_scheme not in ("auto", "auto-all"):
        get_scheme(options.int8_scheme)  # a wrong name fails before minutes of export, not after
    t0 = time.perf_counter()
    with atomic_output_dir(out, force=force) as tmp:
        raw = tmp / ".optimum"
        _export_fp32(model_dir, raw, tmp, options)
        manifest = ExportManifest(
            source=str(model_dir.resolve()),
            source_sha256=hash_model_dir(model_dir),
            opset=_opset_of(tmp / "encoder_model.onnx"),
            task=TASK,
        )
        variants, int8_info = _make_variants(raw, tmp, options, calibration, samples, device)
        shutil.rmtree(raw)  # the unmerged pair optimum also wrote (kept until the fp16 variant was made)
        for name, d in variants.items():
            manifest.variants[name] = {
                "path": "." if name == "fp32" else name,
                "bytes": sum(f.stat().st_size for f in d.iterdir() if f.suffix == ".onnx"),
            }
            if name == "int8":
                manifest.variants[name].update(int8_info)
        if options.validate:
            _check_variants(manifest, model_dir, variants, samples, device)
        manifest.seconds = round(time.perf_counter() - t0, 1)
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest
