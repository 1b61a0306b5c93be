"""The same int8 schemes on two CPUs: test-set WER of each scheme from two runs of benchmarks/int8_schemes.py
(issue 27 item 2), and, where both runs stored them, how many test transcripts are identical.

    python benchmarks/int8_cross_cpu.py benchmarks/results/int8_schemes_cpu.json \\
        benchmarks/results/int8_schemes_avx512.json --names AVX2,AVX-512

ONNX Runtime's CPU kernels (MLAS) are chosen at run time from CPUID, and the pip wheel has no switch to
force the AVX2 path on an AVX-512 machine, so the two kernel paths are compared across two machines of
this project: the same commit's exports, corpus and decoding, one scheme at a time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = ("test_in_domain", "test_unseen_text", "test_unseen_speech")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", default="A,B")
    a = ap.parse_args()
    na, nb = a.names.split(",")
    x, y = json.loads(a.a.read_text()), json.loads(a.b.read_text())
    print(
        f"| model | scheme | {na} WER % (in-domain / unseen text / unseen speech) | {nb} | {nb} − {na}, points "
        "| largest move | identical transcripts |"
    )
    print("|---|---|---|---|---|--:|---|")
    for model in (m for m in x if m in y):
        for scheme, rb in y[model]["schemes"].items():
            ra = x[model]["schemes"].get(scheme)
            if ra is None:
                continue
            wa, wb = ra["test_wer"], rb["test_wer"]
            moves = [100 * (wb[s] - wa[s]) for s in SETS]
            ha, hb = ra.get("test_hypotheses"), rb.get("test_hypotheses")
            same = "not stored"
            if ha and hb:
                n = sum(len(ha[s]) for s in SETS)
                same = f"{sum(p == q for s in SETS for p, q in zip(ha[s], hb[s]))} / {n}"
            print(
                f"| {model} | {scheme} | {_fmt(wa)} | {_fmt(wb)} | "
                + " / ".join(f"{d:+.2f}" for d in moves)
                + f" | {max(abs(d) for d in moves):.2f} | {same} |"
            )
        print(f"| {model} | fp32 (PyTorch) | {_fmt(x[model]['fp32'])} | {_fmt(y[model]['fp32'])} | | | |")


def _fmt(w: dict) -> str:
    return " / ".join(f"{100 * w[s]:.2f}" for s in SETS)


if __name__ == "__main__":
    main()
