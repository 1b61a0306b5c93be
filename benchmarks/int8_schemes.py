"""Every int8 scheme of `mkd export --int8-scheme auto` on the demo's models: what the calibration split
(the demo's dev clips, with references) says, and what the three test sets say, against fp32.

    .venv/bin/python benchmarks/int8_schemes.py work/demo --models tiny.en,tiny.en-3dec-distilled,base \\
        --out benchmarks/results/int8_schemes_cpu.md

Needs a finished demo workdir (its fp32 ONNX exports and fp32 scores). The test sets choose nothing: the
"auto" column is what the calibration split alone chose. PyTorch-free: ONNX Runtime on CPU, the demo's
decoding. Not a test: ~5 minutes per model on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, help="a finished `mkd demo` workdir")
    ap.add_argument("--models", default="tiny.en,tiny.en-3dec-distilled,base")
    ap.add_argument("--max-wer-delta", type=float, default=0.3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.audio import load_audio
    from mkdeploy.data import load_manifest
    from mkdeploy.demo.corpus import SPLITS, TEST_SPLITS, Corpus
    from mkdeploy.demo.scoring import score_model
    from mkdeploy.exporters.int8 import SCHEMES
    from mkdeploy.exporters.int8_choice import choose_int8
    from mkdeploy.exporters.onnx import copy_side_files
    from mkdeploy.version import version_string

    w = a.workdir
    corpus = Corpus(w / "corpus", {s: w / "corpus" / f"{s}.jsonl" for s in SPLITS})
    dev = load_manifest(corpus["dev"], require_text=True)
    audios, refs = [load_audio(u.audio) for u in dev], [u.text or "" for u in dev]
    # the demo's PyTorch fp32 scores where it made them (tiny.en whole is the source of its pruned student:
    # scored here, once, when the demo ran without --score-source)
    fp32_names = {"tiny.en": "source_fp32", "tiny.en-3dec-distilled": "distilled_fp32", "base": "teacher_fp32"}
    rows, record = [], {}
    for model in a.models.split(","):
        fp32_dir = w / "models" / f"{model}-onnx"
        work = w / "int8-schemes" / model
        _, chosen, scores, why = choose_int8(
            fp32_dir, work, audios, refs, a.max_wer_delta, list(SCHEMES), copy_side_files, keep=True
        )
        pt = w / "models" / model
        fp32 = {s: r["wer"] for s, r in score_model(pt, corpus, w / "scores", fp32_names[model]).items()}
        record[model] = {"chosen": chosen, "why": why, "fp32": fp32, "schemes": {}}
        for sc in scores:
            test = score_model(work / sc.scheme, corpus, work / "scores", sc.scheme)
            deltas = {s: 100 * (test[s]["wer"] - fp32[s]) for s in TEST_SPLITS}
            record[model]["schemes"][sc.scheme] = {
                "calibration": sc.__dict__,
                "test_wer": {s: test[s]["wer"] for s in TEST_SPLITS},
                # the transcripts themselves, so a run on another CPU can be compared clip by clip
                "test_hypotheses": {s: test[s]["hypotheses"] for s in TEST_SPLITS},
            }
            rows.append(
                f"| {model} | {sc.scheme} | {sc.wer_delta_points:+.2f} | {sc.ms_per_clip:.0f} | "
                + " | ".join(f"{deltas[s]:+.2f}" for s in TEST_SPLITS)
                + f" | {'**shipped**' if sc.scheme == chosen else ''} |"
            )
            print(rows[-1], flush=True)
    lines = [
        "# int8 schemes on the demo's models: calibration (dev) against the test sets",
        "",
        f"`python benchmarks/int8_schemes.py {w} --models {a.models}` · {version_string()} · "
        f"{_cpu()} · budget +{a.max_wer_delta:g} points on the dev split "
        f"({len(dev)} clips, {sum(len(r.split()) for r in refs)} words, with references)",
        "",
        "WER points over the same model's fp32 (negative: int8 better); ms per dev clip at batch 8, best of two:",
        "",
        "| model | scheme | dev (calibration) | ms / clip | in-domain | unseen text | unseen speech | auto |",
        "|---|---|--:|--:|--:|--:|--:|---|",
        *rows,
    ]
    if a.out:
        a.out.write_text("\n".join(lines) + "\n")
        a.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


def _cpu() -> str:
    """The CPU's model name and instruction set (ONNX Runtime's int8 kernels differ by it)."""
    from mkdeploy.bench import environment
    from mkdeploy.version import cpu_isa

    return f"{environment('cpu')['cpu']} ({cpu_isa()})"


if __name__ == "__main__":
    main()
