"""`--int8-scheme auto`: quantise the export by each candidate scheme (:mod:`mkdeploy.exporters.int8`), score
each against fp32 on the calibration audio, time it, and ship the fastest within the WER budget."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mkdeploy.evaluate import error_rates
from mkdeploy.exporters.int8 import get_scheme, quantize_scheme
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

logger = logging.getLogger(__name__)


@dataclass
class SchemeScore:
    """One scheme measured on the calibration audio.

    Attributes:
        scheme: its name.
        wer: its WER on the calibration audio (against the references, or against fp32's transcripts when
            the audio has none).
        wer_delta_points: ``wer`` less fp32's, in WER points (the budget's unit).
        ms_per_clip: transcription time per calibration clip (best of two passes, batch as exported).
        bytes: size of its graphs.
        within_budget: ``wer_delta_points`` at most the budget.
    """

    scheme: str
    wer: float
    wer_delta_points: float
    ms_per_clip: float
    bytes: int
    within_budget: bool


def _timed_transcripts(
    model_dir: Path, audios: Sequence[np.ndarray], device: str, passes: int = 2
) -> tuple[list[str], float]:
    """Transcripts of the calibration clips and the best of ``passes`` passes' time per clip."""
    # the calibration clips are read as English, as the parity clips are: detection is not what is measured
    opts = TranscriptionOptions(language="en", return_timestamps=False, batch_size=min(8, len(audios)))
    tr = WhisperTranscriber.from_pretrained(model_dir, backend="onnx", device=device)
    best, texts = float("inf"), []
    for _ in range(passes):
        t0 = time.perf_counter()
        texts = [t.text for t in tr.transcribe_arrays(list(audios), opts)]
        best = min(best, time.perf_counter() - t0)
    return texts, 1000 * best / len(audios)


def choose_int8(
    fp32_dir: Path,
    work: Path,
    audios: Sequence[np.ndarray],
    references: Sequence[str] | None,
    max_wer_delta: float,
    schemes: Sequence[str],
    copy_side_files,
    device: str = "cpu",
    keep: bool = False,
) -> tuple[Path, str, list[SchemeScore], str]:
    """Quantise ``fp32_dir`` with each scheme and pick the one to ship.

    Args:
        fp32_dir: the fp32 export (graphs and side files).
        work: a scratch folder; each scheme is written to ``work/<name>``.
        audios: 16 kHz calibration clips.
        references: their transcripts; None scores each scheme against fp32's own transcripts.
        max_wer_delta: the budget, WER points over fp32.
        schemes: names from :data:`SCHEMES`, tried in this order.
        copy_side_files: ``(src, dst)``: copies the config and processor files next to the graphs.
        device: where ONNX Runtime runs the measurement.
        keep: leave every scheme's folder in ``work`` (benchmarks/int8_schemes.py scores them all).

    Returns:
        (the chosen scheme's folder, its name, every scheme's :class:`SchemeScore`, why it was chosen).
        The fastest scheme within the budget wins; when none is within it, the most accurate one, and the
        reason says so (the export warns).
    """
    chosen_schemes = [get_scheme(s) for s in schemes]
    base_texts, _ = _timed_transcripts(fp32_dir, audios, device, passes=1)  # fp32's text only: one pass
    refs = list(references) if references is not None else base_texts
    base_wer = error_rates(refs, base_texts).wer
    scores, dirs = [], {}
    for scheme in chosen_schemes:
        name, d = scheme.name, work / scheme.name
        quantize_scheme(fp32_dir, d, scheme, audios)
        copy_side_files(fp32_dir, d)
        texts, ms = _timed_transcripts(d, audios, device)
        wer = error_rates(refs, texts).wer
        delta = round(100 * (wer - base_wer), 2)
        size = sum(f.stat().st_size for f in d.iterdir() if f.suffix == ".onnx")
        scores.append(SchemeScore(name, round(wer, 4), delta, round(ms, 1), size, delta <= max_wer_delta))
        dirs[name] = d
    within = [s for s in scores if s.within_budget]
    against = "the references" if references is not None else "fp32's transcripts"
    if within:
        pick = min(within, key=lambda s: s.ms_per_clip)
        why = (
            f"fastest of {len(within)} within +{max_wer_delta:g} WER points of fp32 on {len(audios)} "
            f"calibration clips (scored against {against})"
        )
    else:
        pick = min(scores, key=lambda s: (s.wer_delta_points, s.ms_per_clip))
        why = (
            f"no scheme within +{max_wer_delta:g} WER points of fp32 on {len(audios)} calibration clips "
            f"(scored against {against}); shipped the most accurate, +{pick.wer_delta_points:g} points"
        )
        logger.warning("int8: %s", why)
    for name, d in dirs.items():
        if name != pick.scheme and not keep:
            shutil.rmtree(d)
    return dirs[pick.scheme], pick.scheme, scores, why


def scores_json(scores: Sequence[SchemeScore]) -> list[dict]:
    return [asdict(s) for s in scores]
