"""The paper's claim tested: ce / kd / fitnet / manifold over seeds, on the demo's corpus and budget.

    .venv/bin/python benchmarks/ablation.py --from-demo work/demo --seeds 3
    .venv/bin/python benchmarks/ablation.py --from-demo work/demo --seeds 3 --recipes kd --labels reference

Each (recipe, seed) trains the demo's student (tiny.en with 3 of its 4 decoder layers, DemoOptions) under
base with the demo's data, labels, steps, rate, dev schedule and selection (only RecipeConfig.seed changes
between seeds), and is scored in PyTorch fp32 with the demo's
decoding on the three test sets twice: the final step as trained (what the recipe learned; the paper's
claim is about this) and what dev selection ships (often the untrained student, which hides the recipe). The teacher's pass is computed once and shared
(--cache-dir), so a run costs its training, dev and scoring. The table gives mean ± sd over seeds per set
and the paired bootstrap 95% interval of manifold − kd on the seed-averaged per-clip errors (clips
resampled, mkdeploy/stats.py), and each recipe − untrained. Writes WORKDIR/ablation.md and ablation.json.
Not a test: about 7 minutes per run on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("work/ablation"))
    ap.add_argument(
        "--from-demo", type=Path, required=True, help="a `mkd demo` workdir (its models and corpus at least)"
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--recipes", default="ce,kd,fitnet,manifold")
    ap.add_argument("--labels", default=None, help="pseudo or reference (default: the demo's)")
    ap.add_argument("--steps", type=int, help="training steps (default: the demo's)")
    ap.add_argument("--set", action="append", default=[], help="extra RecipeConfig field=value for every run")
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.demo.corpus import TEST_SPLITS, build_corpus
    from mkdeploy.demo.pipeline import DemoOptions, distil, prepare_student
    from mkdeploy.demo.report import TITLES
    from mkdeploy.demo.scoring import score_model
    from mkdeploy.distill.checkpoints import latest_checkpoint
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.merge import merge_run
    from mkdeploy.stats import paired_bootstrap
    from mkdeploy.version import version_string

    w, src = a.workdir, a.from_demo
    demo = DemoOptions()
    labels = a.labels or demo.labels
    steps = a.steps or demo.steps
    teacher = src / "models" / "base"
    student = prepare_student(demo, src / "models" / "tiny.en", src)
    corpus = build_corpus(src / "corpus", demo.corpus)
    # a finished demo's run holds the teacher's pass over this corpus under its labels; otherwise (other
    # labels, or only the demo's first two stages done) the ablation computes its own once
    done = (src / "run" / "summary.json").exists()
    cache = src / "run" if labels == demo.labels and done else w / f"cache-{labels}"
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}

    def scores(name: str, model: Path) -> dict[str, dict]:
        # the demo scored the teacher and the untrained student (fp32) on the same sets already
        where = src if name in ("teacher_fp32", "untrained_fp32") else w
        return score_model(model, corpus, where / "scores", name)

    base = {"teacher": scores("teacher_fp32", teacher), "untrained": scores("untrained_fp32", student)}
    runs: dict[str, list[dict]] = {}
    t_all = time.time()

    def write_report() -> str:
        """ablation.md and ablation.json from the runs so far (rewritten after each run: a cut session keeps them)."""

        def mean_errors(rs: list[dict], split: str) -> list[float]:
            per = [r["scores"][split]["word_errors"] for r in rs]
            return [sum(col) / len(col) for col in zip(*per)]

        words = {s: base["teacher"][s]["ref_words"] for s in TEST_SPLITS}
        lines = [
            f"# Recipe ablation over seeds ({version_string()})",
            "",
            f"`python benchmarks/ablation.py --from-demo {src} --seeds {a.seeds} --recipes {a.recipes}"
            f"{' --labels ' + labels if a.labels else ''}{f' --steps {a.steps}' if a.steps else ''}"
            f"{''.join(f' --set {x}' for x in a.set)}`; {labels} labels, {steps} steps of {demo.batch_size} clips, "
            f"PyTorch fp32, the demo's decoding; {(time.time() - t_all) / 60:.0f} min.",
            "",
            "WER, mean ± sd over seeds (%); *final*: the last step as trained, *shipped*: what dev selection merges:",
            "",
            "| model / recipe | " + " | ".join(TITLES[s] for s in TEST_SPLITS) + " | dev selected, by seed |",
            "|---|" + "--:|" * len(TEST_SPLITS) + "---|",
        ]
        for row, sc in (("teacher base", base["teacher"]), (f"{student.name} untrained", base["untrained"])):
            lines.append(f"| {row} | " + " | ".join(f"{100 * sc[s]['wer']:.2f}" for s in TEST_SPLITS) + " | |")

        def spread(rs: list[dict], key: str) -> str:
            cells = []
            for s in TEST_SPLITS:
                xs = [100 * r[key][s]["wer"] for r in rs]
                sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
                cells.append(f"{statistics.mean(xs):.2f} ± {sd:.2f}")
            return " | ".join(cells)

        for recipe, rs in runs.items():
            lines.append(f"| {recipe}, final | {spread(rs, 'scores')} | |")
            lines.append(
                f"| {recipe}, shipped | {spread(rs, 'shipped')} | " + "; ".join(r["selected"] for r in rs) + " |"
            )
        lines += [
            "",
            "Paired bootstrap 95% intervals on the seed-averaged per-clip errors of the final steps (WER points; "
            "negative: the first is better):",
            "",
            "| difference | " + " | ".join(TITLES[s] for s in TEST_SPLITS) + " |",
            "|---|" + "--:|" * len(TEST_SPLITS),
        ]
        pairs = [(r, "untrained") for r in runs] + ([("manifold", "kd")] if {"manifold", "kd"} <= set(runs) else [])
        table = {}
        for x, y in pairs:
            cells = []
            for s in TEST_SPLITS:
                ex = mean_errors(runs[x], s)
                ey = base["untrained"][s]["word_errors"] if y == "untrained" else mean_errors(runs[y], s)
                d = paired_bootstrap(ex, ey, words[s])
                table[f"{x}-{y}.{s}"] = d.to_dict()
                cells.append(f"{100 * d.delta:+.2f} [{100 * d.lo:+.2f}, {100 * d.hi:+.2f}]")
            lines.append(f"| {x} − {y} | " + " | ".join(cells) + " |")
        w.mkdir(parents=True, exist_ok=True)
        (w / "ablation.md").write_text("\n".join(lines) + "\n")
        (w / "ablation.json").write_text(
            json.dumps(
                {
                    "labels": labels,
                    "steps": steps,
                    "extra": extra,
                    "differences": table,
                    "runs": {
                        r: [
                            {
                                "seed": x["seed"],
                                "selected": x["selected"],
                                **{s: x["scores"][s]["wer"] for s in TEST_SPLITS},
                                "shipped": {s: x["shipped"][s]["wer"] for s in TEST_SPLITS},
                            }
                            for x in rs
                        ]
                        for r, rs in runs.items()
                    },
                },
                indent=2,
            )
        )
        return "\n".join(lines)

    # seed-major: a run cut short still holds every recipe at the seeds it reached
    for seed in range(a.seeds):
        for recipe in a.recipes.split(","):
            name = f"{recipe}-{labels}-s{seed}"
            run = w / "runs" / name
            cfg = RecipeConfig(
                recipe=recipe,
                max_steps=steps,
                batch_size=demo.batch_size,
                eval_every=demo.eval_every,
                save_every=demo.eval_every,
                select_alphas=list(demo.select_alphas),
                seed=seed,
                **({"lr": demo.lr, "w_retain": demo.w_retain} | extra),
            ).validate()
            t0 = time.time()
            distil(run, teacher, student, corpus, cfg, log=lambda s: None, cache_dir=cache, labels=labels)
            merge_run(run, w / "models" / f"{name}-final", force=True, checkpoint=latest_checkpoint(run))
            final = scores(f"{name}-final", w / "models" / f"{name}-final")
            res = merge_run(run, w / "models" / name, force=True)
            if res.step == steps and res.alpha == 1.0:
                chosen = final  # dev chose the last step whole: the same model, scored once
            else:
                chosen = scores(name, w / "models" / name) if res.step else base["untrained"]
            runs.setdefault(recipe, []).append(
                {
                    "seed": seed,
                    "scores": final,
                    "shipped": chosen,
                    "selected": f"step {res.step}, alpha {res.alpha:.2f}",
                }
            )
            print(
                json.dumps(
                    {
                        "run": name,
                        **{s: round(100 * final[s]["wer"], 2) for s in TEST_SPLITS},
                        **{f"shipped_{s}": round(100 * chosen[s]["wer"], 2) for s in TEST_SPLITS},
                        "selected": runs[recipe][-1]["selected"],
                        "s": round(time.time() - t0),
                    }
                ),
                flush=True,
            )
            write_report()

    print(write_report())


if __name__ == "__main__":
    main()
