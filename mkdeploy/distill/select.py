"""Choosing what `mkd merge` ships: the best (checkpoint, scale) on the dev split, the start included.

A run is scored on its dev manifest at step 0 (the untrained student), every ``eval_every`` steps and at
the end. The best checkpoint is then also tried at fractions α of its change from the start: for LoRA the
merged weights are W + α·ΔW (peft's ``set_scale``), for a fully trained decoder θ0 + α(θ − θ0). Weight-space
interpolation between a fine-tuned model and its start often recovers robustness the fine-tuning lost
(Wortsman et al., "Robust fine-tuning of zero-shot models", 2022, WiSE-FT). Step 0 (α = 0) is always a
candidate, so the chosen student is never worse on dev than the one training started from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

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

    @property
    def change(self) -> float:
        """How far from the start this candidate moves (ties go to the smaller change)."""
        return 0.0 if self.step == 0 else self.alpha * (1 + self.step * 1e-9)


def best(candidates: list[Candidate]) -> Candidate:
    """The lowest dev WER; on a tie, the candidate that changes the student least (step 0 first)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    return min(candidates, key=lambda c: (round(c.wer, 9), c.change))


@dataclass
class Selection:
    """What merge reads (``RUN/selection.json``)."""

    chosen: Candidate
    candidates: list[Candidate]
    dev_manifest: str
    dev_clips: int

    @property
    def training_helped(self) -> bool:
        return self.chosen.step > 0 and self.chosen.alpha > 0

    def reason(self) -> str:
        start = next((c for c in self.candidates if c.step == 0), None)
        base = f"lowest dev WER {100 * self.chosen.wer:.2f}% of {len(self.candidates)} candidates on {self.dev_clips} dev clips"
        if not self.training_helped:
            return base + "; training did not help on dev, so the untrained student is kept"
        return base + (f" (untrained {100 * start.wer:.2f}%)" if start else "")

    def save(self, run: Path) -> Path:
        data = {
            "chosen": asdict(self.chosen),
            "candidates": [asdict(c) for c in self.candidates],
            "dev_manifest": self.dev_manifest,
            "dev_clips": self.dev_clips,
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
            Candidate(**d["chosen"]), [Candidate(**c) for c in d["candidates"]], d["dev_manifest"], d["dev_clips"]
        )


def set_lora_scale(model, alpha: float) -> int:
    """Scale every LoRA layer's update to ``alpha`` times its trained size (1.0 restores it).

    Returns:
        the number of LoRA layers scaled.
    """
    from peft.tuners.lora import LoraLayer

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
