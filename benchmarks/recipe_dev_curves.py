"""Dev-WER curves of recipe variants on a finished demo's corpus (README, "Students that generalise").

    .venv/bin/python benchmarks/recipe_dev_curves.py --from-demo work/demo kd_t2 ce kd_t1 manifold_t1

Each variant trains tiny.en under base on the demo's train split (the corpus's transcripts as labels, the
30% teacher-WER filter, LoRA on the decoder with the encoder frozen) and scores the dev split every 20
steps; the teacher's pass is shared through one cache. Prints the curve of each run (RUN/eval.jsonl holds
it). Not a test: about 10-15 minutes per 120-step variant on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "kd_t2": {"recipe": "kd", "tau_kd": 2.0},
    "ce": {"recipe": "ce"},
    "kd_t1": {"recipe": "kd", "tau_kd": 1.0},
    "manifold_t1": {"recipe": "manifold", "tau_kd": 1.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    ap.add_argument("--from-demo", type=Path, required=True, help="a finished `mkd demo` workdir")
    ap.add_argument("--workdir", type=Path, default=Path("work/dev_curves"))
    ap.add_argument("--steps", type=int, default=120)
    a = ap.parse_args()

    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.trainer import TrainArgs, train

    d = a.from_demo.resolve()
    base = dict(encoder_lora_layers=0, max_steps=a.steps, batch_size=8, eval_every=20, save_every=20, select_alphas=[])
    for name in a.variants:
        cfg = RecipeConfig(**{**base, **VARIANTS[name]}).validate()
        t0 = time.time()
        summary = train(
            TrainArgs(
                d / "models" / "base",
                d / "models" / "tiny.en",
                d / "corpus" / "train.jsonl",
                a.workdir / f"run_{name}",
                cfg,
                eval_manifest=d / "corpus" / "dev.jsonl",
                force=True,
                pseudo_label="missing",
                wer_threshold=0.3,
                cache_dir=a.workdir / "cache",
            ),
            log=lambda s: None,
        )
        rows = [json.loads(x) for x in (a.workdir / f"run_{name}" / "eval.jsonl").read_text().splitlines()]
        curve = " ".join(f"{r['step']}:{100 * r['wer']:.2f}" for r in rows if r.get("alpha", 1.0) in (0.0, 1.0))
        print(
            f"{name}: {curve} (selected {summary.get('selected', {}).get('checkpoint') or 'untrained'}, "
            f"{time.time() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
