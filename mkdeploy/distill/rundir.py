"""A training run's directory: every file `mkd train` writes there, and how (each whole file atomically;
the two logs appended a line at a time, so a killed run loses at most the line being written).

Layout::

    RUN/config.json          the RecipeConfig
    RUN/run.json             teacher, student, manifests, parameter counts, pairing share
    RUN/data/                pseudo-labels (labels.jsonl) and the teacher's cached outputs
    RUN/checkpoints/         see :mod:`mkdeploy.distill.checkpoints`
    RUN/metrics.jsonl        one line per step: every loss term, lr, samples/s
    RUN/eval.jsonl           held-out WER at each evaluation
    RUN/selection.json       what dev chose (:mod:`mkdeploy.distill.select`)
    RUN/summary.json         written when the run reaches max_steps (or is interrupted after scoring dev)
    RUN/ranks/rankK.json     each rank's checksum of its trainable weights
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from mkdeploy.distill.checkpoints import CheckpointStore
from mkdeploy.errors import OutputExistsError
from mkdeploy.fsutil import atomic_write_text


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


class RunDir:
    """The files of one run directory.

    Args:
        path: the run directory (`mkd train --output`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = CheckpointStore(self.path)

    def _read(self, name: str) -> dict | None:
        p = self.path / name
        return json.loads(p.read_text()) if p.exists() else None

    def check_free(self, resume: bool, force: bool) -> bool:
        """Whether an existing, non-empty run must be wiped first (``force``); refuses to touch it without
        ``resume`` or ``force``."""
        if not (self.path.exists() and any(self.path.iterdir())) or resume:
            return False
        if not force:
            raise OutputExistsError(
                f"{self.path}: a run directory already exists; --resume to continue it or --force to start over"
            )
        return True

    def wipe(self) -> None:
        shutil.rmtree(self.path)

    def saved_config(self) -> dict | None:
        return self._read("config.json")

    def write_config(self, config: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.json", _dump(config))

    def info(self) -> dict | None:
        """run.json: what the run trained (None before the teacher's pass finished)."""
        return self._read("run.json")

    def write_info(self, info: dict) -> None:
        atomic_write_text(self.path / "run.json", _dump(info))

    def summary(self) -> dict | None:
        return self._read("summary.json")

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / "summary.json", _dump(summary))

    def append_metrics(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def append_eval(self, record: dict) -> None:
        with open(self.path / "eval.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def eval_records(self) -> list[dict]:
        p = self.path / "eval.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def write_rank_checksum(self, rank: int, world: int, step: int, weights: torch.Tensor) -> None:
        """Each rank's checksum of its trainable weights (flattened): after DDP steps they must agree."""
        d = self.path / "ranks"
        d.mkdir(exist_ok=True)
        atomic_write_text(
            d / f"rank{rank}.json",
            json.dumps(
                {
                    "rank": rank,
                    "world": world,
                    "step": step,
                    "sum": float(weights.double().sum()),
                    "abs_sum": float(weights.double().abs().sum()),
                    "bytes_sha1": hashlib.sha1(weights.numpy().tobytes()).hexdigest(),
                }
            )
            + "\n",
        )
