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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mkdeploy.errors import MkdError
from mkdeploy.transcription.runtime import WhisperTranscriber

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
        blockwise: the decoder's weights as 8-bit blocks (ONNX Runtime's ``MatMulNBits``, symmetric, one
            scale per ``block_size`` weights along the input dimension; the embedding table int8 with one
            scale per token), and the encoder as ``encoder`` says. With ``accuracy_level`` 4 the decoder's
            activations are quantised per block of ``block_size`` too, where dynamic int8 gives each
            activation tensor one scale; 0 computes in fp32 (activations never rounded).
        block_size: weights per scale, for ``blockwise``.
        accuracy_level: ``MatMulNBits``' compute type, for ``blockwise``: 0 fp32 (slow on CPU: 61 ms per
            distilled-student step against 1.9 for dynamic int8, benchmarks/results/int8_blockwise.md), 4 int8 (1.7 ms).
        encoder: for ``blockwise``: "fp32" (unquantised: the same arithmetic on every CPU's kernels,
            benchmarks/results/int8_kernel_paths.md), "per-channel" (dynamic int8, faster) or "static"
            (static QDQ, S8S8 as ONNX Runtime's quantisation guide recommends on x86: per-channel int8
            weights and int8 activations whose scales were fixed once on the calibration audio, so no batch
            moves them; the weight MatMuls and convolutions only, softmax and layer norms stay fp32).
    """

    name: str
    per_channel: bool = True
    reduce_range: bool = False
    fp32_edges: bool = False
    blockwise: bool = False
    block_size: int = 32
    accuracy_level: int = 4
    encoder: str = "fp32"

    @property
    def batch_invariant(self) -> bool:
        """Whether a clip's transcript is the same whatever clips share its batch. Dynamic int8 gives each
        activation tensor one scale computed over the whole batch, so one caller's audio moves another's
        scales (17 of 32 demo transcripts changed between batch 1 and 8, issue 46); the blockwise decoder
        quantises activations per block of one row, and an fp32 encoder quantises nothing."""
        return self.blockwise and self.encoder in ("fp32", "static")

    @property
    def needs_calibration(self) -> bool:
        """Static scales are measured on audio: :func:`quantize_scheme` needs ``calibration``."""
        return self.blockwise and self.encoder == "static"


SCHEMES: dict[str, Int8Scheme] = {
    s.name: s
    for s in (
        Int8Scheme("per-channel"),
        Int8Scheme("per-channel-reduce-range", reduce_range=True),
        Int8Scheme("per-channel-fp32-edges", fp32_edges=True),
        Int8Scheme("per-tensor", per_channel=False),
        Int8Scheme("blockwise-decoder-fp32-encoder", blockwise=True),
        Int8Scheme("blockwise-decoder-per-channel-encoder", blockwise=True, encoder="per-channel"),
        Int8Scheme("blockwise-decoder-static-encoder", blockwise=True, encoder="static"),
    )
}

#: what ``--int8-scheme auto`` measures: the schemes whose answer does not depend on the batch (a server
#: batches different callers' audio together), less static scales, which did not carry past their calibration
#: audio (+9.12 WER points on the demo's unseen speech, benchmarks/results/int8_batch_invariance.md);
#: ``auto-all`` measures every scheme
AUTO_SCHEMES: tuple[str, ...] = tuple(
    name for name, s in SCHEMES.items() if s.batch_invariant and not s.needs_calibration
)


def get_scheme(name: str) -> Int8Scheme:
    """The scheme called ``name``.

    Raises:
        MkdError: no such scheme (the message lists them).
    """
    if name not in SCHEMES:
        raise MkdError(f"--int8-scheme {name}: choose auto, auto-all or one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


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


def quantize_scheme(src: Path, dst: Path, scheme: Int8Scheme, calibration: Sequence[np.ndarray] | None = None) -> None:
    """Quantise every graph of ``src`` into ``dst`` as ``scheme`` says. Dynamic int8 covers the merged
    decoder's If-branches too (without ``EnableSubgraph`` its two branches, where all its MatMuls live,
    stay fp32).

    Args:
        src: the fp32 export.
        dst: where the quantised graphs go (side files are the caller's).
        scheme: how.
        calibration: 16 kHz clips whose encoder activations fix a static scheme's scales.

    Raises:
        MkdError: a static scheme without calibration audio.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # heavy; only export needs it

    if scheme.needs_calibration and not calibration:
        raise MkdError(f"--int8-scheme {scheme.name} fixes its scales on audio: pass --calibration DIR")
    dst.mkdir(parents=True, exist_ok=True)
    files: tuple[str, ...] = ONNX_FILES
    if scheme.blockwise:
        _quantize_blockwise(src / ONNX_FILES[1], dst / ONNX_FILES[1], scheme)
        if scheme.encoder == "fp32":
            shutil.copy(src / ONNX_FILES[0], dst / ONNX_FILES[0])
            return
        if scheme.encoder == "static":
            assert calibration is not None
            _quantize_static_encoder(src, dst / ONNX_FILES[0], calibration)
            return
        files = ONNX_FILES[:1]
    root = logging.getLogger()
    level = root.level
    # quantize_dynamic logs a pre-processing advice on the root logger for every graph; silence it for
    # these calls only, not for the whole process.
    root.setLevel(max(level, logging.ERROR))
    try:
        for name in files:
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


def encoder_calibration_features(model_dir: Path, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each clip's log-mel features ``[1, mels, frames]`` as the transcriber feeds the encoder: in the
    smallest encoder window of ``model_dir`` that holds the clip (a windowed student's buckets), so the
    calibrated scales see the shapes and padding served audio has."""
    from mkdeploy.constants import SAMPLE_RATE
    from mkdeploy.transcription.batching import model_inputs

    tr = WhisperTranscriber.from_pretrained(model_dir, backend="onnx", device="cpu")
    windows = tr.windows()
    return [model_inputs(tr.engine, [a], windows.bucket_for(len(a) / SAMPLE_RATE)).features.numpy() for a in audios]


def _quantize_static_encoder(src: Path, dst: Path, calibration: Sequence[np.ndarray]) -> None:
    """The encoder of ``encoder="static"``: static QDQ, S8S8, per-channel weights; activation ranges by
    MinMax over the calibration clips' features; only the MatMuls and convolutions that read a weight."""
    import onnx
    from onnxruntime.quantization import (  # heavy; only export needs it
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    features = encoder_calibration_features(src, calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter([{"input_features": f} for f in features])

        def get_next(self):
            return next(self.rows, None)

    model = onnx.load(str(src / ONNX_FILES[0]))
    weights = {i.name for i in model.graph.initializer}
    nodes = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Conv") and n.input[1] in weights]
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the pre-processing advice again (see quantize_scheme)
    try:
        quantize_static(
            src / ONNX_FILES[0],
            dst,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        root.setLevel(level)


def _quantize_blockwise(src: Path, dst: Path, scheme: Int8Scheme) -> None:
    """The decoder of :attr:`Int8Scheme.blockwise`: every weight MatMul (the merged decoder's If-branches
    included, which ``MatMulNBitsQuantizer`` walks itself) becomes ``MatMulNBits`` with 8-bit weights."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (  # heavy; only export needs it
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    # the quantiser logs one INFO line per node it skips (thousands): quiet for these calls only
    qlog = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = qlog.level
    qlog.setLevel(logging.WARNING)
    try:
        config = DefaultWeightOnlyQuantConfig(
            block_size=scheme.block_size, is_symmetric=True, accuracy_level=scheme.accuracy_level, bits=8
        )
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(src)),
            bits=8,
            block_size=scheme.block_size,
            is_symmetric=True,
            accuracy_level=scheme.accuracy_level,
            algo_config=config,
        )
        quantizer.process()
        model = quantizer.model.model
        _int8_embedding_columns(model)
        onnx.save(model, str(dst))
    finally:
        qlog.setLevel(level)


def _int8_embedding_columns(model) -> int:
    """The token embedding's fp32 table, read by a column Gather (exporters/onnx.py's untied table,
    ``[d_model, vocab]``), becomes int8 with one symmetric scale per token: ``Gather`` of int8 columns,
    ``Cast``, ``Mul`` by the gathered scales. ``MatMulNBits`` packs its own copy of the table for the output
    projection and leaves the fp32 original to the Gather, which was most of the file (base: 106 of
    166 MB) and of the session's memory.

    Returns:
        the number of Gathers rewritten (one per branch of the merged decoder; 0 for the encoder).
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gathers = []

    def walk(g) -> None:
        for n in g.node:
            if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2:
                if any(a.name == "axis" and a.i == 1 for a in n.attribute):
                    gathers.append((g, n))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(graph)
    tables = {n.input[0] for _, n in gathers}
    for name in tables:
        table = numpy_helper.to_array(inits[name])  # [d_model, vocab]
        scale = (np.abs(table).max(axis=0) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(inits[name])
        graph.initializer.extend(
            [numpy_helper.from_array(q, name + "_int8"), numpy_helper.from_array(scale, name + "_token_scale")]
        )
    for g, n in gathers:
        name, ids, out = n.input[0], n.input[1], n.output[0]
        pos = list(g.node).index(n)
        new = [
            # ids [batch, seq] -> int8 columns [d_model, batch, seq], times each token's scale [batch, seq]
            helper.make_node("Gather", [name + "_int8", ids], [out + "_int8"], axis=1, name=n.name + "_int8"),
            helper.make_node("Cast", [out + "_int8"], [out + "_f"], to=onnx.TensorProto.FLOAT, name=n.name + "_cast"),
            helper.make_node("Gather", [name + "_token_scale", ids], [out + "_scale"], axis=0, name=n.name + "_scale"),
            helper.make_node("Mul", [out + "_f", out + "_scale"], [out], name=n.name + "_dequant"),
        ]
        g.node.remove(n)
        for node in reversed(new):
            g.node.insert(pos, node)
    return len(gathers)
