"""Score chosen checkpoints of a finished demo run on the three test sets, as the demo scores its student.

    .venv/bin/python benchmarks/score_candidates.py work/demo step-000020@1.0 step-000040@1.0

Each CHECKPOINT@ALPHA is merged (`merge_run` at that share of its change), exported to ONNX int8 and
scored (`score_model` of mkdeploy/demo/pipeline.py) into WORKDIR/candidates/. This is how the one-standard-
error rule of mkdeploy/distill/select.py was found to matter: a diagnosis after the fact, never a way to
choose what a run ships (test sets choose nothing). Not a test: ~2.5 minutes per candidate on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, help="a finished `mkd demo` workdir")
    ap.add_argument("candidates", nargs="+", help="CHECKPOINT@ALPHA, e.g. step-000020@1.0")
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.demo.corpus import SPLITS, TEST_SPLITS, Corpus
    from mkdeploy.demo.scoring import score_model
    from mkdeploy.distill.merge import merge_run
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx

    w, run = a.workdir, a.workdir / "run"
    corpus = Corpus(w / "corpus", {s: w / "corpus" / f"{s}.jsonl" for s in SPLITS})
    rows = {}
    for spec in a.candidates:
        checkpoint, alpha = spec.split("@")
        out = w / "candidates" / f"{checkpoint}-{alpha}"
        merge_run(run, out / "merged", force=True, checkpoint=run / "checkpoints" / checkpoint, alpha=float(alpha))
        export_onnx(out / "merged", out / "onnx", ExportOptions(quantize="int8"), force=True)
        scores = score_model(out / "onnx" / "int8", corpus, out / "scores", "candidate")
        rows[spec] = {s: scores[s]["wer"] for s in TEST_SPLITS} | {
            f"unseen speech: {e}": v["wer"] for e, v in scores["test_unseen_speech"]["by_engine"].items()
        }
        print(spec, json.dumps({k: round(100 * v, 2) for k, v in rows[spec].items()}), flush=True)
    (w / "candidates" / "scores.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
