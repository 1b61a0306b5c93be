"""Intervals on WER differences: the paired bootstrap over utterances.

Two systems scored on the same clips differ clip by clip; resampling the clips (with replacement) once for
both keeps that pairing, so the interval is on the difference itself, not on two independent WERs
(Bisani and Ney, "Bootstrap estimates for confidence intervals in ASR performance evaluation", ICASSP
2004). WER is corpus-level (total errors over total reference words), so each resample recomputes it as a
ratio of sums, never as a mean of per-clip rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Difference:
    """WER(a) − WER(b) on the same clips, with its paired-bootstrap percentile interval (fractions).

    Attributes:
        delta: the observed difference (negative: ``a`` makes fewer errors).
        lo, hi: the interval's bounds at ``confidence``.
        ref_words: reference words over all clips.
    """

    delta: float
    lo: float
    hi: float
    confidence: float
    ref_words: int
    clips: int

    @property
    def excludes_zero(self) -> bool:
        return self.hi < 0 or self.lo > 0

    def to_dict(self) -> dict:
        return asdict(self)


def _resample_indices(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def paired_bootstrap(
    errors_a: Sequence[float],
    errors_b: Sequence[float],
    ref_words: Sequence[int],
    confidence: float = 0.95,
    samples: int = 10_000,
    seed: int = 0,
) -> Difference:
    """The paired bootstrap interval of WER(a) − WER(b).

    Args:
        errors_a, errors_b: word errors per clip of each system, same clips in the same order (means over
            seeds may be fractional).
        ref_words: reference words per clip.
        confidence: the interval's coverage (percentile method).
        samples: bootstrap resamples; ``seed`` fixes them, so a report is reproducible.

    Returns:
        a :class:`Difference`.
    """
    a, b, w = (np.asarray(x, dtype=np.float64) for x in (errors_a, errors_b, ref_words))
    if not len(a) == len(b) == len(w) or len(w) == 0:
        raise ValueError(f"paired_bootstrap needs equal, non-empty lists ({len(a)}, {len(b)}, {len(w)})")
    total = int(w.sum())
    delta = float((a.sum() - b.sum()) / max(total, 1))
    idx = _resample_indices(len(w), samples, seed)
    words = np.maximum(w[idx].sum(axis=1), 1)
    diffs = (a[idx].sum(axis=1) - b[idx].sum(axis=1)) / words
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return Difference(delta, float(lo), float(hi), confidence, total, len(w))


def gap_closed(teacher: float, untrained: float, distilled: float) -> float | None:
    """The share of the teacher gap the distilled student closes: (untrained − distilled) / (untrained −
    teacher); None when the untrained student is no worse than the teacher (no gap to close)."""
    gap = untrained - teacher
    return None if gap <= 0 else (untrained - distilled) / gap


def pct(x: float | None, unit: str = "%") -> str:
    """A rate as percent with two decimals (``0.0912`` -> ``"9.12%"``; ``unit=""`` under a "%" column
    header); "n/a" for a missing one."""
    return "n/a" if x is None else f"{100 * x:.2f}{unit}"
