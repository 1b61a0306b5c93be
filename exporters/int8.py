"""Accuracy-aware int8: quantise an fp32 export several ways, measure each on calibration audio, ship the
fastest within a WER budget.

ONNX Runtime's dynamic int8 is not one thing. Scales per output channel or per tensor, 7-bit weights
(``reduce_range``, which ONNX Runtime's quantisation docs recommend on CPUs without VNNI, where u8 x s8
products can saturate 16-bit intermediates) and which layers stay fp32 all move a small model's WER by
points (benchmarks/results/demo_report.md: per-tensor moved the demo's students by up to 3.5), so the
choice is measured on audio the user passes, not assumed. The export manifest records every scheme's
figures and why the shipped one won.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mkdeploy.errors import MkdError
from mkdeploy.evaluate import error_rates
from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber

logger = logging.getLogger(__name__)

ONNX_FILES = ("encoder_model.onnx", "decoder_model_merged.onnx")


@dataclass(frozen=True)
class Int8Scheme:
    """One way to quantise an export's weights to int8 (activations are quantised per batch at run time).

    Attributes:
        name: how ``--int8-scheme`` and the manifest call it.
        per_channel: one scale per output channel (else one per tensor).
        reduce_range: 7-bit weights (for CPUs without VNNI).
        fp32_edges: keep the sensitive ends in fp32: the encoder's convolutional front-end, the first and
            last layer of encoder and decoder, and the output projection.
    """

    name: str
    per_channel: bool = True
    reduce_range: bool = False
    fp32_edges: bool = False


SCHEMES: dict[str, Int8Scheme] = {
    s.name: s
    for s in (
        Int8Scheme("per-channel"),
        Int8Scheme("per-channel-reduce-range", reduce_range=True),
        Int8Scheme("per-channel-fp32-edges", fp32_edges=True),
        Int8Scheme("per-tensor", per_channel=False),
    )
}


def get_scheme(name: str) -> Int8Scheme:
    """The scheme called ``name``.

    Raises:
        MkdError: no such scheme (the message lists them).
    """
    if name not in SCHEMES:
        raise MkdError(f"--int8-scheme {name}: choose auto or one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


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


def _edge_nodes(path: Path) -> list[str]:
    """Names of the nodes :attr:`Int8Scheme.fp32_edges` keeps in fp32 in one graph (subgraphs included)."""
    import onnx  # heavy; only export needs it

    model = onnx.load(str(path), load_external_data=False)
    nodes: list = []

    def walk(g) -> None:
        for n in g.node:
            nodes.append(n)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(model.graph)
    names = [n.name for n in nodes]
    layers = sorted({int(n.split("layers.")[1].split("/")[0]) for n in names if "layers." in n})
    ends = {f"layers.{layers[0]}/", f"layers.{layers[-1]}/"} if layers else set()
    keep = {n for n in names if "/conv" in n or "proj_out" in n or any(e in n for e in ends)}
    # the output projection shares its table with the token embedding (exporters/onnx.py unties it into one
    # transposed table): the embedding's Gather stays fp32 too, or the table would be stored twice
    inits = {i.name for i in model.graph.initializer}
    table = {x for n in nodes if n.name in keep and "proj_out" in n.name for x in n.input if x in inits}
    keep |= {n.name for n in nodes if table & set(n.input)}
    return [n for n in names if n in keep]


def quantize_scheme(src: Path, dst: Path, scheme: Int8Scheme) -> None:
    """Dynamic int8 quantisation of every graph of ``src`` into ``dst``, the merged decoder's If-branches
    included (without ``EnableSubgraph`` its two branches, where all its MatMuls live, stay fp32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # heavy; only export needs it

    dst.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    # quantize_dynamic logs a pre-processing advice on the root logger for every graph; silence it for
    # these calls only, not for the whole process.
    root.setLevel(max(level, logging.ERROR))
    try:
        for name in ONNX_FILES:
            quantize_dynamic(
                src / name,
                dst / name,
                weight_type=QuantType.QInt8,
                per_channel=scheme.per_channel,
                reduce_range=scheme.reduce_range,
                nodes_to_exclude=_edge_nodes(src / name) if scheme.fp32_edges else None,
                extra_options={"EnableSubgraph": True},
            )
    finally:
        root.setLevel(level)


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
        quantize_scheme(fp32_dir, d, scheme)
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
