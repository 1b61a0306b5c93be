"""Choosing what `mkd merge` ships: the best (checkpoint, scale) on the dev split, the start included.

A run is scored on its dev manifest at step 0 (the untrained student), every ``eval_every`` steps and at
the end. The best checkpoint is then also tried at fractions α of its change from the start: for LoRA the
merged weights are W + α·ΔW (peft's ``set_scale``), for a fully trained decoder θ0 + α(θ − θ0). Weight-space
interpolation between a fine-tuned model and its start often recovers robustness the fine-tuning lost
(Wortsman et al., "Robust fine-tuning of zero-shot models", 2022, WiSE-FT). Step 0 (α = 0) is always a
candidate, so the chosen student is never worse on dev than the one training started from.

A small dev split is noisy: in the first demo on the five-split corpus (32 dev clips), the chosen
candidate beat the untrained student by 1.75 WER points on dev and lost to it on all three test sets, and
its neighbours on the alpha ladder scored 20.4% and 24.1% around its 19.1%. So a trained candidate
replaces the start only when the gain is unlikely to be chance: it must make fewer word errors than the
start on at least ``confidence`` of bootstrap resamples of the dev clips (Bisani and Ney, "Bootstrap
estimates for confidence intervals in ASR performance evaluation", ICASSP 2004).

Among the trained candidates, the lowest dev WER is not always the one to ship: dev shares the training
voices and text source, so it rewards adapting to them, while speech of other engines rewards staying near
the start. On the demo's run at 192 clips (benchmarks/results/demo_report.md), step 60 had the lowest dev
WER (19.30%, step 20: 20.39%, a 5-word gap with a 6.5-word bootstrap standard error) and lost to the
untrained student on unseen speech (37.72% against 36.49%) where step 20 did not (36.35%). So the one-
standard-error rule (Breiman et al., "Classification and Regression Trees", 1984; Hastie, Tibshirani and
Friedman, "The Elements of Statistical Learning", §7.10) picks among the candidates that dev cannot tell
from the best the one that moves least (fewest steps times alpha).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mkdeploy.fsutil import atomic_write_text

SELECTION = "selection.json"


@dataclass(frozen=True)
class Candidate:
    """One scored option.

    Attributes:
        step: training step of the checkpoint (0: the untrained student).
        alpha: share of the checkpoint's change from the start that is kept (0 ... 1).
        wer: dev WER.
        checkpoint: the checkpoint folder's name ("" for step 0).
    """

    step: int
    alpha: float
    wer: float
    checkpoint: str = ""
    errors: list[int] = field(default_factory=list, compare=False, repr=False)  # word errors per dev clip

    @property
    def movement(self) -> float:
        """Training steps' worth of change kept: step x alpha (0 for the start)."""
        return 0.0 if self.step == 0 else self.step * self.alpha

    @property
    def change(self) -> float:
        """How far from the start this candidate moves (ties go to the smaller change)."""
        return 0.0 if self.step == 0 else self.alpha * (1 + self.step * 1e-9)


def best(candidates: list[Candidate]) -> Candidate:
    """The lowest dev WER; on a tie, the candidate that changes the student least (step 0 first)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    return min(candidates, key=lambda c: (round(c.wer, 9), c.change))


def improvement_probability(start: list[int], candidate: list[int], samples: int = 2000, seed: int = 0) -> float:
    """Share of bootstrap resamples of the dev clips on which ``candidate`` makes fewer word errors than
    ``start`` (paired: both are scored on the same resampled clips).

    Args:
        start, candidate: word errors per dev clip, in the same clip order.
    """
    if len(start) != len(candidate) or not start:
        return 0.0
    diff = np.asarray(start, dtype=np.int64) - np.asarray(candidate, dtype=np.int64)  # > 0: candidate better
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(samples, len(diff)))
    return float((diff[idx].sum(axis=1) > 0).mean())


def paired_standard_error(a: list[int], b: list[int], samples: int = 2000, seed: int = 0) -> float:
    """Bootstrap standard error, in word errors, of ``sum(b) - sum(a)`` over resamples of the dev clips
    (paired: both are counted on the same resampled clips)."""
    if len(a) != len(b) or not a:
        return 0.0
    diff = np.asarray(b, dtype=np.int64) - np.asarray(a, dtype=np.int64)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(samples, len(diff)))
    return float(diff[idx].sum(axis=1).std())


def choose(candidates: list[Candidate], confidence: float = 0.9, seed: int = 0, within_se: float = 0.0) -> Candidate:
    """What merge ships (see the module docstring).

    Trained candidates are tried from the lowest dev WER up; the first with a lower WER than step 0 and an
    :func:`improvement_probability` of at least ``confidence`` wins (none: the start). With ``within_se`` >
    0 the winner then gives way to the trained candidate that moves least (:attr:`Candidate.movement`)
    among those still below the start's dev WER and at most ``within_se`` paired standard errors above the
    winner's word errors. With ``confidence`` 0, or without a step-0 candidate or per-clip errors, the
    first step is :func:`best`.
    """
    start = next((c for c in candidates if c.step == 0), None)
    if start is None or confidence <= 0 or not start.errors:
        winner = best(candidates)
    else:
        winner = start
        for c in sorted((c for c in candidates if c.step > 0), key=lambda c: (round(c.wer, 9), c.change)):
            if c.wer >= start.wer:
                break
            if improvement_probability(start.errors, c.errors, seed=seed) >= confidence:
                winner = c
                break
    if winner.step == 0 or within_se <= 0 or not winner.errors:
        return winner
    near = [
        c
        for c in candidates
        if c.step > 0
        and c.movement < winner.movement
        and (start is None or c.wer < start.wer)
        and len(c.errors) == len(winner.errors)
        and sum(c.errors) - sum(winner.errors) <= within_se * paired_standard_error(winner.errors, c.errors, seed=seed)
    ]
    return min(near, key=lambda c: (c.movement, round(c.wer, 9))) if near else winner


def selectable(candidates: list[Candidate], within_se: float = 0.0) -> set[str]:
    """The checkpoints :func:`choose` may still ship as more steps are scored: the trainer keeps them when
    it deletes old checkpoints.

    The best on dev always. With ``within_se`` > 0 an earlier checkpoint within a standard error of the
    best may win, and which ones qualify changes with every new score (the best and its paired standard
    errors move), so every trained checkpoint scored below the untrained student's dev WER is kept. Keeping
    only the best once made merge fail with "no complete checkpoint": the rule chose step 20 (12.40%, the
    least change within a standard error of step 40's 12.01%) after step 20 had been deleted.
    """
    trained = [c for c in candidates if c.step > 0 and c.alpha == 1.0 and c.checkpoint]
    if not trained:
        return set()
    top = {best(trained).checkpoint}
    if within_se <= 0:
        return top
    start = next((c for c in candidates if c.step == 0), None)
    return top | {c.checkpoint for c in trained if start is None or c.wer < start.wer}


@dataclass
class Selection:
    """What merge reads (``RUN/selection.json``)."""

    chosen: Candidate
    candidates: list[Candidate]
    dev_manifest: str
    dev_clips: int
    confidence: float = 0.0
    within_se: float = 0.0

    @property
    def training_helped(self) -> bool:
        return self.chosen.step > 0 and self.chosen.alpha > 0

    def reason(self) -> str:
        start = next((c for c in self.candidates if c.step == 0), None)
        base = f"lowest dev WER {100 * self.chosen.wer:.2f}% of {len(self.candidates)} candidates on {self.dev_clips} dev clips"
        if not self.training_helped:
            lowest = best(self.candidates)
            if lowest.step > 0 and lowest.wer < self.chosen.wer:
                return (
                    f"dev WER {100 * lowest.wer:.2f}% ({lowest.checkpoint} at alpha {lowest.alpha:.2f}) against "
                    f"{100 * self.chosen.wer:.2f}% untrained on {self.dev_clips} dev clips, a gain below "
                    f"{100 * self.confidence:.0f}% bootstrap confidence; training did not help on dev, so the "
                    "untrained student is kept"
                )
            return base + "; training did not help on dev, so the untrained student is kept"
        lowest = best([c for c in self.candidates if c.step > 0])
        if lowest.wer < self.chosen.wer:
            base = (
                f"dev WER {100 * self.chosen.wer:.2f}% on {self.dev_clips} dev clips, the least change within "
                f"{self.within_se:g} standard error of the lowest ({lowest.checkpoint} at alpha {lowest.alpha:.2f}: "
                f"{100 * lowest.wer:.2f}%) among {len(self.candidates)} candidates"
            )
        return base + (f" (untrained {100 * start.wer:.2f}%)" if start else "")

    def save(self, run: Path) -> Path:
        data = {
            "chosen": asdict(self.chosen),
            "candidates": [asdict(c) for c in self.candidates],
            "dev_manifest": self.dev_manifest,
            "dev_clips": self.dev_clips,
            "confidence": self.confidence,
            "within_se": self.within_se,
            "reason": self.reason(),
        }
        return atomic_write_text(Path(run) / SELECTION, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, run: Path) -> Selection | None:
        p = Path(run) / SELECTION
        if not p.exists():
            return None
        d = json.loads(p.read_text())
        return cls(
            Candidate(**d["chosen"]),
            [Candidate(**c) for c in d["candidates"]],
            d["dev_manifest"],
            d["dev_clips"],
            d.get("confidence", 0.0),
            d.get("within_se", 0.0),
        )


def set_lora_scale(model, alpha: float) -> int:
    """Scale every LoRA layer's update to ``alpha`` times its trained size (1.0 restores it).

    Returns:
        the number of LoRA layers scaled.
    """
    from peft.tuners.lora import LoraLayer  # heavy; only LoRA runs need it

    n = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name in module.lora_A:
                module.set_scale(name, alpha)
            n += 1
    return n


def interpolate_state(start: dict, end: dict, alpha: float) -> dict:
    """θ0 + α(θ − θ0), tensor by tensor (floating tensors only; others are taken from ``end``)."""
    return {k: (start[k] + alpha * (v - start[k])) if v.is_floating_point() else v for k, v in end.items()}
