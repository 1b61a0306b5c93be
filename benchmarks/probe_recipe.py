"""One training probe on the demo's corpus: a recipe override trained, its *final* step merged and scored.

    .venv/bin/python benchmarks/probe_recipe.py NAME LABELS STEPS 'JSON overrides' [STUDENT]
    .venv/bin/python benchmarks/probe_recipe.py dec_noretain_lr1e3 pseudo 60 '{"w_retain": 0, "lr": 1e-3}'
    .venv/bin/python benchmarks/probe_recipe.py pruned3_kd pseudo 120 '{"w_retain": 0}' work/students/tiny3

STUDENT (default work/demo/models/tiny.en) is any local student, e.g. one ``mkd student init`` pruned.

Needs only the demo's models and corpus (work/demo/models, work/demo/corpus: the demo's first two stages),
not a finished demo as benchmarks/ablation.py does. Dev selection still runs (and is printed), but the
final step is what is scored, PyTorch fp32 with the demo's decoding, on the three test sets: the question
is whether the override moves the model at all. Writes work/probes/NAME/{run,final,scores}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    name, labels, steps, overrides = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    student = Path(sys.argv[5]) if len(sys.argv) == 6 else Path("work/demo/models/tiny.en")
    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.demo.corpus import build_corpus, demo_corpus
    from mkdeploy.demo.pipeline import DemoOptions, distil
    from mkdeploy.demo.scoring import score_model
    from mkdeploy.distill.checkpoints import latest_checkpoint
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.merge import merge_run

    w, x = Path("work/demo"), Path("work/probes") / name
    corpus = build_corpus(w / "corpus", demo_corpus())
    demo = DemoOptions()  # the demo's recipe and batch, written once there
    base = dict(recipe=demo.recipe, max_steps=steps, batch_size=demo.batch_size, eval_every=steps, save_every=20,
                select_alphas=[])  # fmt: skip
    cfg = RecipeConfig(**(base | overrides)).validate()
    t = time.time()
    s = distil(x / "run", w / "models" / "base", student, corpus, cfg, print,
               cache_dir=Path("work/probes") / f"cache-{labels}", labels=labels)  # fmt: skip
    print(f"trained in {time.time() - t:.0f} s; dev WER {s.get('wer_before')} -> {s.get('wer_after')}")
    merge_run(x / "run", x / "final", force=True, checkpoint=latest_checkpoint(x / "run"))
    sc = score_model(x / "final", corpus, x / "scores", "final")
    print(name, {k: round(100 * v["wer"], 2) for k, v in sc.items()}, f"{time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
