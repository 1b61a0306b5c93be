"""What the exported ONNX graphs are made of beyond optimum's defaults: the export config that gives a windowed
student's encoder a free number of frames, and the rewrite that gives the merged decoder's output projection
its own pre-transposed table (:func:`mkdeploy.exporters.onnx.export_onnx` calls both)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mkdeploy.errors import ExportError

logger = logging.getLogger(__name__)


def windowed_encoder_onnx_config(model_dir: Path):
    """optimum's Whisper encoder config with the frame axis left dynamic.

    optimum pins the encoder's input to 3000 mel frames and its output to 1500 ("Remove unnecessary dynamic
    axis"); encoder buckets need both free, named so optimum's IOBinding can size the output buffer.
    """
    from optimum.exporters.onnx.base import ConfigBehavior  # heavy; only export needs it
    from optimum.exporters.onnx.model_configs import WhisperOnnxConfig  # heavy; only export needs it
    from transformers import AutoConfig  # heavy; only export needs it

    def free(axes: dict, name: str, dims: dict, behavior) -> dict:
        if behavior is ConfigBehavior.ENCODER:
            axes[name] = dims
        return axes

    class WindowedWhisperOnnxConfig(WhisperOnnxConfig):
        inputs = property(
            lambda self: free(
                WhisperOnnxConfig.inputs.fget(self),
                "input_features",
                {0: "batch_size", 2: "encoder_sequence_length"},
                self._behavior,
            )
        )
        outputs = property(
            lambda self: free(
                WhisperOnnxConfig.outputs.fget(self),
                "last_hidden_state",
                {0: "batch_size", 1: "encoder_sequence_length / 2"},
                self._behavior,
            )
        )

    config = AutoConfig.from_pretrained(model_dir)
    return WindowedWhisperOnnxConfig(
        config, task="automatic-speech-recognition", use_past=True, use_past_in_inputs=False
    ).with_behavior("encoder")


def untie_output_projection(path: Path) -> bool:
    """Give the merged decoder's output projection its own pre-transposed table.

    Whisper ties its output projection to the token embedding; the exported graph reads one
    [vocab, d_model] table through a Gather (embedding) and a Transpose feeding the logits MatMul, inside
    both branches of the merged decoder. Dynamic int8 quantisation then stored the table in int8 and
    inserted a DequantizeLinear of the whole table before the Transpose, run on every decoding step:
    measured on tiny.en (2 CPU cores), 3.4 ms of a 5.4 ms step. Storing the table once, transposed
    ([d_model, vocab]), makes the projection a plain weight MatMul (quantised as such: 1.1 ms per step) and
    the embedding a Gather on axis 1 plus a small Transpose of the rows it picks. Outputs are unchanged and
    the file keeps one copy of the table.

    Returns:
        True when a tied table was found and rewritten.
    """
    import onnx  # heavy; only export needs it
    from onnx import numpy_helper  # heavy; only export needs it

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = _all_nodes(graph)
    tables = {
        n.input[0]
        for _, n in nodes
        if n.op_type == "Transpose" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2
    }
    tables &= {n.input[0] for _, n in nodes if n.op_type == "Gather"}
    for name in tables:
        table = numpy_helper.to_array(inits[name])
        transposed = numpy_helper.from_array(np.ascontiguousarray(table.T), name + "_transposed_table")
        graph.initializer.remove(inits[name])
        graph.initializer.append(transposed)
        for g, n in nodes:
            if name not in n.input:
                continue
            if n.op_type == "Transpose":
                _bypass(g, n, transposed.name, nodes)
            elif n.op_type == "Gather" and all(a.name != "axis" or a.i == 0 for a in n.attribute):
                _gather_columns(g, n, transposed.name)
            else:
                raise ExportError(
                    f"{path}: the tied table {name} has an unexpected reader ({n.op_type}); export without --quantize"
                )
    if tables:
        onnx.save(model, str(path))
    return bool(tables)


def _all_nodes(graph) -> list[tuple]:
    """(owning graph, node) for every node, subgraphs (the merged decoder's If branches) included."""
    import onnx  # heavy; only export needs it

    nodes: list[tuple] = []

    def walk(g) -> None:
        for n in g.node:
            nodes.append((g, n))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(graph)
    return nodes


def _bypass(g, transpose, table: str, nodes: list[tuple]) -> None:
    """Drop a Transpose of the tied table; its readers read the pre-transposed table instead."""
    old = transpose.output[0]
    g.node.remove(transpose)
    for _, other in nodes:
        for k, x in enumerate(other.input):
            if x == old:
                other.input[k] = table


def _gather_columns(g, gather, table: str) -> None:
    """An embedding Gather (axis 0) on the table becomes a Gather of columns of the transposed table."""
    from onnx import helper  # heavy; only export needs it

    pos = list(g.node).index(gather)
    out = gather.output[0]
    cols = helper.make_node("Gather", [table, gather.input[1]], [out + "_cols"], axis=1, name=gather.name + "_cols")
    # ids [batch, seq] -> Gather axis 1: [d_model, batch, seq] -> [batch, seq, d_model]
    back = helper.make_node("Transpose", [out + "_cols"], [out], perm=[1, 2, 0], name=gather.name + "_rows")
    g.node.remove(gather)
    g.node.insert(pos, back)
    g.node.insert(pos, cols)
