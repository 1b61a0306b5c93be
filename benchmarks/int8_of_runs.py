"""int8 beside fp32 for the final models of an ablation run (issue 26 item 4): each exported with the demo's
export (ONNX Runtime dynamic int8), scored with the demo's decoding on its three test sets, and the paired
bootstrap interval of each seed's and of the seed mean's int8 against the untrained student's int8.

    .venv/bin/python benchmarks/int8_of_runs.py work/abl-enc4

Expects WORKDIR/models/kd-pseudo-s{0,1,2}-final (benchmarks/ablation.py) and the demo's work/demo.
Writes WORKDIR/int8.json; prints per-model WERs and the intervals. int8 figures depend on the CPU.
"""

import json
import sys
from pathlib import Path

from mkdeploy.cli.common import quiet_libraries

quiet_libraries()
from mkdeploy.demo.corpus import build_corpus, demo_corpus  # noqa: E402
from mkdeploy.demo.pipeline import export_for_scoring  # noqa: E402
from mkdeploy.demo.scoring import score_model  # noqa: E402
from mkdeploy.stats import paired_bootstrap  # noqa: E402

w, x = Path("work/demo"), Path(sys.argv[1] if len(sys.argv) > 1 else "work/abl-enc4")
corpus = build_corpus(w / "corpus", demo_corpus())
models = {"untrained": w / "models" / "tiny.en", **{f"s{s}": x / "models" / f"kd-pseudo-s{s}-final" for s in range(3)}}
out = {}
for name, m in models.items():
    onnx = export_for_scoring(m, x / "onnx" / name)
    out[name] = score_model(onnx / "int8", corpus, x / "scores-int8", name)
    print(name, {k: round(100 * v["wer"], 2) for k, v in out[name].items()}, flush=True)
for s in ("s0", "s1", "s2"):
    for split in out[s]:
        d = paired_bootstrap(
            out[s][split]["word_errors"], out["untrained"][split]["word_errors"], out[s][split]["ref_words"]
        )
        print(s, split, f"{100 * d.delta:+.2f} [{100 * d.lo:+.2f}, {100 * d.hi:+.2f}]")
for split in out["s0"]:
    mean = [sum(c) / 3 for c in zip(*(out[s][split]["word_errors"] for s in ("s0", "s1", "s2")))]
    d = paired_bootstrap(mean, out["untrained"][split]["word_errors"], out["s0"][split]["ref_words"])
    wers = [round(100 * out[s][split]["wer"], 2) for s in ("s0", "s1", "s2")]
    print("mean3", split, wers, f"{100 * d.delta:+.2f} [{100 * d.lo:+.2f}, {100 * d.hi:+.2f}]")
json.dump({k: {s: v[s]["wer"] for s in v} for k, v in out.items()}, open(x / "int8.json", "w"), indent=1)
