"""A run's checkpoints: the one module that knows their layout (the trainer saves and resumes through it,
`mkd merge` applies one through it).

Layout::

    RUN/checkpoints/step-N/  adapter/ (peft format, LoRA runs) or decoder.safetensors (full-decoder runs),
                             heads.safetensors, optimizer.pt, scheduler.pt, rng.pt, state.json
    RUN/checkpoints/LATEST   the name of the newest complete one

A checkpoint is written to a hidden folder and renamed into place, then LATEST is replaced, so a job killed
at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mkdeploy.distill.select import interpolate_state, set_lora_scale

LATEST = "LATEST"


@dataclass(frozen=True)
class CheckpointInfo:
    """What state.json records: the step reached and how the student trained ("lora" or "full-decoder")."""

    step: int
    train_mode: str

    @classmethod
    def read(cls, ck: Path) -> CheckpointInfo:
        s = json.loads((ck / "state.json").read_text())
        return cls(int(s["step"]), s["train_mode"])


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (None when there is none)."""
    return CheckpointStore(run).latest()


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _decoder_state(student) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in student.model.decoder.state_dict().items()}


class CheckpointStore:
    """Save, find, load and apply the checkpoints under ``RUN/checkpoints``.

    Args:
        run: the run directory.
    """

    def __init__(self, run: str | Path):
        self.dir = Path(run) / "checkpoints"

    def path(self, step: int) -> Path:
        return self.dir / f"step-{step:06d}"

    def latest(self) -> Path | None:
        """The newest complete checkpoint (LATEST, else the highest complete step-N), or None."""
        latest = self.dir / LATEST
        if latest.exists():
            p = self.dir / latest.read_text().strip()
            if (p / "state.json").exists():
                return p
        done = sorted(p for p in self.dir.glob("step-*") if (p / "state.json").exists()) if self.dir.exists() else []
        return done[-1] if done else None

    def save(self, step: int, train_mode: str, student, heads, optimizer, scheduler, keep: set[str]) -> Path:
        """Write step ``step`` atomically, point LATEST at it, and delete older ones except ``keep``'s names
        and the one before (two are kept so a crash while deleting still leaves a fallback)."""
        final = self.path(step)
        tmp = self.dir / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if train_mode == "lora":
            student.save_pretrained(tmp / "adapter")
        else:
            save_file(_cpu(student.model.decoder.state_dict()), tmp / "decoder.safetensors")
        save_file(_cpu(heads.state_dict()), tmp / "heads.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(
            {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            tmp / "rng.pt",
        )
        (tmp / "state.json").write_text(json.dumps({"step": step, "train_mode": train_mode}) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = self.dir / f".{LATEST}.tmp"
        latest_tmp.write_text(final.name + "\n")
        os.replace(latest_tmp, self.dir / LATEST)
        keep = keep | {final.name}
        for old in sorted(p for p in self.dir.glob("step-*") if p.name not in keep)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load_weights(ck: Path, student) -> dict[str, torch.Tensor] | None:
        """Load a checkpoint's trained weights into the training student (a peft model for LoRA runs).
        Returns the full-decoder run's loaded decoder state (what :meth:`scale` interpolates toward), None
        for LoRA (whose scale is the adapters')."""
        if CheckpointInfo.read(ck).train_mode == "lora":
            from peft import set_peft_model_state_dict  # heavy; only LoRA runs need it
            from peft.utils import load_peft_weights  # heavy; only LoRA runs need it

            set_peft_model_state_dict(student, load_peft_weights(str(ck / "adapter"), device="cpu"))
            return None
        student.model.decoder.load_state_dict(load_file(ck / "decoder.safetensors"))
        return _decoder_state(student)

    @staticmethod
    def load_training_state(ck: Path, heads, optimizer, scheduler) -> int:
        """Restore what resuming needs beyond the weights (heads, optimiser, schedule, RNGs); returns the step."""
        heads.load_state_dict(load_file(ck / "heads.safetensors"))
        optimizer.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=False))
        rng = torch.load(ck / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        return CheckpointInfo.read(ck).step

    @staticmethod
    def scale(student, alpha: float, start: dict | None = None, trained: dict | None = None) -> None:
        """Keep ``alpha`` of a loaded checkpoint's change from the start (1.0 restores it): the LoRA scale,
        or the decoder interpolated between ``start`` and ``trained`` for full-decoder runs."""
        if start is None or trained is None:
            set_lora_scale(student, alpha)
        else:
            student.model.decoder.load_state_dict(interpolate_state(start, trained, alpha))

    @staticmethod
    def apply(model, ck: Path, alpha: float):
        """A plain student with ``alpha`` of checkpoint ``ck``'s change applied, for merging. Returns the
        model to evaluate before folding (a peft model for LoRA) and a function that folds it."""
        if CheckpointInfo.read(ck).train_mode == "lora":
            from peft import PeftModel  # heavy; only LoRA runs need it

            peft_model = PeftModel.from_pretrained(model, ck / "adapter").eval()
            set_lora_scale(peft_model, alpha)
            return peft_model, peft_model.merge_and_unload
        start = _decoder_state(model)
        model.model.decoder.load_state_dict(interpolate_state(start, load_file(ck / "decoder.safetensors"), alpha))
        return model, lambda: model
