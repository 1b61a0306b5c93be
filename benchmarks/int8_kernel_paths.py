"""Do the int8 formats compute the same numbers on ONNX Runtime's AVX2 and AVX-512 kernel paths? Both paths
on one machine, op by op (issue 27 item 2).

MLAS, ONNX Runtime's CPU kernel library, picks its GEMM kernels from CPUID at start-up, and the pip wheel
has no switch to force the AVX2 path on an AVX-512 machine (microsoft/onnxruntime#7010). QEMU's user-mode
emulator can hide the AVX-512 bits: ``qemu-x86_64 -cpu Haswell python ...`` runs the same wheel under a
CPUID that reports AVX2 and FMA only, so MLAS takes its AVX2 kernels (Debian's ``qemu-user``; QEMU >= 7.2
emulates AVX2). Emulation runs about 7,000x slower than native here (a 0.9 GFLOP fp32 MatMul: 14 ms native,
97 s emulated), so whole transcripts are out of reach (one tiny.en encoder pass did not finish in 6
minutes), and a teacher-forced shortcut does not work either: dynamic int8 takes its activation scale from
the whole tensor of each call, so one pass over all positions is not the greedy loop's token-at-a-time
arithmetic (natively, per-channel int8 reproduced its own greedy transcript on 16 of 40 clips that way).

So the kernels are compared where they differ, one MatMul at a time, on real weights and real activations:
the inputs of four of tiny.en's Linear layers captured on a real clip, each layer's weight in every format
(fp32, the dynamic int8 schemes, the blockwise decoder's MatMulNBits at both compute levels), the same
graph and input on both kernel paths.

    .venv/bin/python benchmarks/int8_kernel_paths.py prepare work/demo --out /tmp/kp
    .venv/bin/python benchmarks/int8_kernel_paths.py check /tmp/kp --name native
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_kernel_paths.py check /tmp/kp --name avx2
    .venv/bin/python benchmarks/int8_kernel_paths.py report /tmp/kp --out benchmarks/results/int8_kernel_paths.md

``check`` imports numpy and onnxruntime only (torch takes minutes to import under emulation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mkdeploy.constants import SAMPLE_RATE

#: (name in the report, the Linear module in transformers' Whisper, rows of its input kept)
LAYERS = (
    ("encoder layer 0 fc1", "model.encoder.layers.0.fc1", 48),
    ("encoder last layer fc2", "model.encoder.layers.-1.fc2", 48),
    ("decoder layer 0 cross-attention k_proj (encoder states)", "model.decoder.layers.0.encoder_attn.k_proj", 48),
    ("output projection (logits)", "proj_out", 4),
)


ENCODER, DECODER = "encoder_model.onnx", "decoder_model_merged.onnx"


def _module(model, dotted: str):
    m = model
    for part in dotted.split("."):
        m = m[int(part)] if part.lstrip("-").isdigit() else getattr(m, part)
    return m


def prepare(a) -> None:
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from mkdeploy.audio import load_audio
    from mkdeploy.data import load_manifest
    from mkdeploy.exporters.int8 import SCHEMES, Int8Scheme, quantize_scheme
    from mkdeploy.models.student import load_whisper

    model, processor = load_whisper(a.workdir / "models" / a.model)
    model.eval()
    clip = load_manifest(a.workdir / "corpus" / "test_unseen_speech.jsonl")[0]
    feats = processor.feature_extractor(load_audio(clip.audio), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    captured: dict[str, np.ndarray] = {}

    def keep(name: str):
        def hook(module, inputs, output) -> None:  # the first call's input only (the prompt, for proj_out)
            if name not in captured:
                captured[name] = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).numpy().copy()

        return hook

    hooks = [_module(model, dotted).register_forward_hook(keep(name)) for name, dotted, _ in LAYERS]
    with torch.inference_mode():
        model.generate(feats.input_features, max_new_tokens=8)
    for h in hooks:
        h.remove()
    a.out.mkdir(parents=True, exist_ok=True)
    plan = {"clip": str(clip.audio), "model": a.model, "cases": []}
    for i, (name, dotted, rows) in enumerate(LAYERS):
        x = captured[name]
        x = x[np.linspace(0, len(x) - 1, min(rows, len(x))).astype(int)].astype(np.float32)
        w = _module(model, dotted).weight.detach().numpy().T.astype(np.float32).copy()  # [in, out]
        src = a.out / f"layer{i}" / "fp32"
        src.mkdir(parents=True, exist_ok=True)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"], name=f"{dotted}/MatMul")],
            "one_layer",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[0]])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(w, "w")],
        )
        one = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        # quantize_scheme reads an export's two graph files: the same one-layer graph under both names
        for f in ("encoder_model.onnx", "decoder_model_merged.onnx"):
            onnx.save(one, str(src / f))
        np.save(a.out / f"layer{i}" / "x.npy", x)
        # format -> the graph file that holds this layer in it (blockwise schemes quantise the decoder's file)
        formats = {"fp32": f"fp32/{ENCODER}"}
        blockwise = {
            "blockwise int8 (accuracy level 4)": next(s for s in SCHEMES.values() if s.blockwise),
            "blockwise, fp32 compute (level 0)": Int8Scheme("blockwise-level-0", blockwise=True, accuracy_level=0),
        }
        for scheme in SCHEMES.values():
            if scheme.fp32_edges or scheme.blockwise:  # edges: per-channel's MatMul, or fp32's
                continue
            quantize_scheme(src, a.out / f"layer{i}" / scheme.name, scheme)
            formats[scheme.name] = f"{scheme.name}/{ENCODER}"
        for label, scheme in blockwise.items():
            quantize_scheme(src, a.out / f"layer{i}" / scheme.name, scheme)
            formats[label] = f"{scheme.name}/{DECODER}"
        plan["cases"].append(
            {"layer": name, "dir": f"layer{i}", "shape": [list(x.shape), list(w.shape)], "formats": formats}
        )
        print(f"prepared {name}: x {x.shape} w {w.shape}, {len(formats)} formats", flush=True)
    (a.out / "plan.json").write_text(json.dumps(plan, indent=1))


def check(a) -> None:
    import onnxruntime as ort

    plan = json.loads((a.dir / "plan.json").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1  # one thread: the same blocking whatever the machine's core count
    so.log_severity_level = 3
    for case in plan["cases"]:
        x = np.load(a.dir / case["dir"] / "x.npy")
        for n, (fmt, graph) in enumerate(case["formats"].items()):
            t0 = time.time()
            path = a.dir / case["dir"] / graph
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            y = sess.run(None, {"x": x})[0]
            np.save(a.dir / case["dir"] / f"y{n}_{a.name}.npy", y)
            print(f"{a.name} {case['layer']} {fmt}: {time.time() - t0:.1f} s", flush=True)
    from mkdeploy.version import cpu_isa

    (a.dir / f"isa_{a.name}.txt").write_text(cpu_isa())


def report(a) -> None:
    plan = json.loads((a.dir / "plan.json").read_text())
    na, nb = a.names.split(",")
    isa = {n: (a.dir / f"isa_{n}.txt").read_text() for n in (na, nb)}
    lines = [
        "# int8 formats on ONNX Runtime's AVX2 and AVX-512 kernel paths, one machine, op by op",
        "",
        "Issue 27 item 2. `benchmarks/int8_kernel_paths.py` (its docstring gives the commands and why whole",
        f"transcripts could not be emulated). {plan['model']}'s Linear layers, their inputs captured on one",
        f"unseen-speech clip; `{na}` ran natively (CPUID: {isa[na]}), `{nb}` under `qemu-x86_64 -cpu Haswell`",
        f"(CPUID: {isa[nb]}), one ONNX Runtime thread each.",
        "",
        "Each cell: elements of the output that differ between the two paths, and the largest difference relative",
        "to the output's largest magnitude. The last column is the format's own error against fp32 (native), for scale.",
        "",
        "| layer (x rows × in → out) | format | outputs differing | largest difference / max abs | format vs fp32 / max abs |",
        "|---|---|--:|--:|--:|",
    ]
    record = []
    for case in plan["cases"]:
        fp32 = np.load(a.dir / case["dir"] / f"y0_{na}.npy")
        scale = float(np.abs(fp32).max())
        (rows, din), (_, dout) = case["shape"]
        for n, fmt in enumerate(case["formats"]):
            ya = np.load(a.dir / case["dir"] / f"y{n}_{na}.npy")
            yb = np.load(a.dir / case["dir"] / f"y{n}_{nb}.npy")
            differ = int((ya != yb).sum())
            rel = float(np.abs(ya - yb).max()) / scale
            own = float(np.abs(ya - fp32).max()) / scale
            record.append(
                {"layer": case["layer"], "format": fmt, "differing": differ, "of": ya.size, "rel": rel, "own": own}
            )
            lines.append(
                f"| {case['layer']} ({rows} × {din} → {dout}) | {fmt} | {differ:,} of {ya.size:,} | {rel:.1e} | {own:.1e} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
        a.out.with_suffix(".json").write_text(json.dumps({"isa": isa, "cases": record}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("workdir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="tiny.en")
    c = sub.add_parser("check")
    c.add_argument("dir", type=Path)
    c.add_argument("--name", required=True)
    r = sub.add_parser("report")
    r.add_argument("dir", type=Path)
    r.add_argument("--names", default="native,avx2")
    r.add_argument("--out", type=Path)
    a = ap.parse_args()
    {"prepare": prepare, "check": check, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
