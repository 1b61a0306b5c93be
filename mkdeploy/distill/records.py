"""The teacher's pass's records: what the pass needs to cache (:class:`TeacherNeeds`), the rules it labels
by (:class:`LabelRules`), each row's line of ``labels.jsonl`` (:class:`LabelRecord`), the cached outputs
(:class:`TeacherOutputs`) and the training samples built from them (:class:`Sample`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mkdeploy.data import Utterance
from mkdeploy.distill.tokens import ForcedSequence
from mkdeploy.errors import DataError


@dataclass
class TeacherNeeds:
    """What the recipe reads from the teacher."""

    encoder_layers: list[int]
    decoder_layers: list[int]
    logits: bool

    def key(self) -> str:
        return json.dumps([self.encoder_layers, self.decoder_layers, self.logits])


@dataclass
class ForcedPass:
    """The teacher's decoder run along a forced sequence: its outputs, the logits at every position, and
    the text of its argmax at each label position (what the ``forced`` filter scores; "" when not read)."""

    seq: ForcedSequence
    out: Any
    logits: torch.Tensor
    text: str

    def avg_logprob(self) -> float:
        """The teacher's mean log-probability of the sequence's text tokens and end-of-text: Whisper's
        ``avg_logprob`` of a greedy transcript when the sequence is the teacher's own transcript (openai/whisper
        falls back below -1.0)."""
        labels = torch.tensor(self.seq.labels, device=self.logits.device)
        keep = labels != -100
        logp = torch.log_softmax(self.logits.float()[keep], dim=-1)
        return float(logp.gather(1, labels[keep][:, None]).mean())


@dataclass
class TeacherOutputs:
    """The teacher's cached outputs for one clip (one ``.pt`` file under the cache directory).

    Attributes:
        logits: [paired positions, shared vocabulary] at the student's paired positions (fp16).
        encoder: teacher encoder layer j -> its states at the clip's valid frames [frames, d_teacher].
        decoder: teacher decoder layer j -> its states at the paired positions [positions, d_teacher].
    """

    logits: torch.Tensor | None = None
    encoder: dict[int, torch.Tensor] = field(default_factory=dict)
    decoder: dict[int, torch.Tensor] = field(default_factory=dict)

    def to_payload(self) -> dict[str, torch.Tensor]:
        """The saved form: flat keys ``enc_{j}``, ``dec_{j}``, ``logits`` (what caches on disk hold)."""
        out = {f"enc_{j}": v for j, v in self.encoder.items()} | {f"dec_{j}": v for j, v in self.decoder.items()}
        return out | ({"logits": self.logits} if self.logits is not None else {})

    @classmethod
    def load(cls, path: Path, decoder_rows: bool = True) -> TeacherOutputs:
        """Read a cache file. ``decoder_rows=False`` (a clip taught in timestamp mode pairs no decoder
        position) keeps only the encoder states."""
        d = torch.load(path, weights_only=True)
        layers = {k: {int(n[4:]): v for n, v in d.items() if n.startswith(k)} for k in ("enc_", "dec_")}
        if not decoder_rows:
            return cls(None, layers["enc_"], {})
        return cls(d.get("logits"), layers["enc_"], layers["dec_"])


@dataclass
class Sample:
    """One training clip, ready for the student.

    Attributes:
        audio: 16 kHz samples.
        student: the student's teacher-forced sequence.
        student_pos: paired student positions (indices into student.input_ids).
        cache: path of the teacher's cached outputs for this clip.
        timestamped: taught as a timed segment (cross-entropy and encoder alignment only).
    """

    id: str
    audio: np.ndarray
    text: str
    student: ForcedSequence
    student_pos: list[int]
    cache: Path
    n_positions: int
    timestamped: bool = False


@dataclass(frozen=True)
class LabelRules:
    """How the teacher's pass labels and filters the training rows (every rule in one object: the
    trainer builds it, the fingerprint, the pass and Ray's label actors read it).

    Attributes:
        pseudo_label: "missing" (label rows without text) or "all" (train on the teacher's transcripts).
        wer_threshold: drop rows whose reference the teacher misses by more than this WER (None: off).
        teacher_filter: how ``wer_threshold`` reads the teacher: "generated" (its transcript) or "forced"
            (its argmax along the reference), see :meth:`TeacherPass.compute`.
        min_avg_logprob: the reference-free filter of a corpus without transcripts: drop rows labelled by
            the teacher whose transcript it gives a mean token log-probability below this (Whisper's -1.0).
        timestamp_prob: share of clips taught in timestamp mode (:func:`timestamp_mode`); the cache does
            not depend on it.
        seed: the recipe's seed (which clips are taught in timestamp mode).
    """

    pseudo_label: str = "missing"
    wer_threshold: float | None = None
    teacher_filter: str = "generated"
    min_avg_logprob: float | None = None
    timestamp_prob: float = 0.0
    seed: int = 0

    def check(self) -> LabelRules:
        if self.teacher_filter not in ("generated", "forced"):
            raise DataError(f"teacher_filter {self.teacher_filter!r}: use 'generated' or 'forced'")
        if self.pseudo_label not in ("missing", "all"):
            raise DataError(f"pseudo_label {self.pseudo_label!r}: use 'missing' or 'all'")
        return self

    def timed(self, r: Utterance) -> bool:
        """Whether row ``r`` trains in timestamp mode."""
        return timestamp_mode(r.id, self.timestamp_prob, self.seed)

    def labelled_by_teacher(self, r: Utterance) -> bool:
        """Whether row ``r`` trains on the teacher's transcript (rather than its reference)."""
        return self.pseudo_label == "all" or r.text is None


@dataclass
class LabelRecord:
    """One line of ``labels.jsonl``: a row's label, or why it was dropped, and where its teacher outputs
    are. Fields that do not apply are None and left out of the line.

    Attributes:
        id: the manifest row.
        fp: the pass's fingerprint (a line of another fingerprint is not read back).
        reference: the row's reference text (None when the manifest had none).
        teacher: the teacher's transcript (None when not generated or empty).
        text: what the student trains on (reference or teacher's transcript).
        dropped: why the row does not train (None: it trains).
        teacher_wer: the teacher against the reference (with ``wer_threshold``).
        filter: "forced" when the WER filter read the teacher along the reference.
        avg_logprob: the teacher's mean token log-probability of its transcript (``min_avg_logprob``).
        cache: the teacher outputs' file under ``data/teacher/``.
        student_pos: paired student positions.
        n_student, n_teacher: label positions on each side (the pairing share).
        segments: the teacher's timed segments [start, end, text] (timestamp-mode clips).
    """

    id: str
    fp: str
    reference: str | None = None
    teacher: str | None = None
    text: str = ""
    dropped: str | None = None
    teacher_wer: float | None = None
    filter: str | None = None
    avg_logprob: float | None = None
    cache: str | None = None
    student_pos: list[int] | None = None
    n_student: int | None = None
    n_teacher: int | None = None
    segments: list | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> LabelRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def timestamp_mode(clip_id: str, prob: float, seed: int = 0) -> bool:
    """Whether a clip trains in timestamp mode: a fixed, seeded share ``prob`` of the clips (by id, so the
    choice survives resumes and is the same on every rank)."""
    if prob <= 0:
        return False
    h = int(hashlib.sha1(f"{seed}:{clip_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < prob
