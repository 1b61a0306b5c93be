"""Held-out scoring during training: the dev WER of the student as it is now, per clip (selection's
paired test reads the per-clip errors) and, for windowed students, per encoder window."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mkdeploy.data import Utterance
from mkdeploy.distill.select import Candidate
from mkdeploy.evaluate import error_rates, wer_by_group
from mkdeploy.models.window import WindowConfig
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


def checkpoint_name(step: int) -> str:
    """A trained step's checkpoint folder name; "" names the untrained student (step 0)."""
    return f"step-{step:06d}" if step else ""


@dataclass
class DevScore:
    """One evaluation (a line of eval.jsonl).

    Attributes:
        step: the step whose weights were scored (0: the untrained student).
        alpha: the fraction of that checkpoint's change kept (selection tries several).
        checkpoint: its folder name ("" for step 0).
        wer: the dev WER.
        clips: how many dev clips.
        errors: word errors per clip, in manifest order.
        by_bucket: with encoder windows, WER per window.
    """

    step: int
    alpha: float
    checkpoint: str
    wer: float
    clips: int
    errors: list[int]
    by_bucket: dict | None = None

    def record(self) -> dict:
        rec = asdict(self)
        if rec["by_bucket"] is None:
            del rec["by_bucket"]
        return rec

    def candidate(self) -> Candidate:
        return Candidate(self.step, self.alpha if self.step else 0.0, self.wer, self.checkpoint, self.errors)


class DevEvaluator:
    """Scores a student on the dev clips with the transcriber (the decoding the demo and `mkd eval` use).

    Args:
        rows: the dev manifest's rows (with reference text).
        processor: the student's processor.
        options: decoding options (language, no timestamps, the token cap).
        device: the torch device.
        windows: the student's encoder buckets, to report WER per window.
        frozen_encoder: the student's encoder cannot change during the run, so the dev clips' encoder
            states are computed once and kept.
    """

    def __init__(
        self,
        rows: list[Utterance],
        processor,
        options: TranscriptionOptions,
        device: Any,
        windows: WindowConfig | None = None,
        frozen_encoder: bool = False,
    ):
        self.rows, self.processor, self.options, self.device = rows, processor, options, device
        self.windows = windows
        self.states_memo: dict[str, Any] | None = {} if frozen_encoder else None

    def score(self, model, step: int, alpha: float = 1.0) -> DevScore:
        """Dev WER of ``model`` (a plain Whisper model, adapters active) as the weights of ``step``."""
        was_training = model.training
        model.eval()
        tr = WhisperTranscriber(model, self.processor, "torch", str(self.device))
        if self.states_memo is not None:
            tr.states_memo = self.states_memo
        res, _ = tr.transcribe_files([r.audio for r in self.rows], self.options)
        model.train(was_training)
        by = {t.path: t for t in res}
        refs = [r.text or "" for r in self.rows]
        hyps = [by[str(r.audio)].text if str(r.audio) in by else "" for r in self.rows]
        rates = error_rates(refs, hyps)
        by_bucket = None
        if self.windows:
            # held-out WER per encoder window: each clip counts in the bucket that encoded it
            buckets = [
                self.windows.bucket_for(by[str(r.audio)].duration if str(r.audio) in by else 0.0) for r in self.rows
            ]
            by_bucket = wer_by_group(refs, hyps, buckets)
        return DevScore(
            step,
            alpha,
            checkpoint_name(step),
            rates.wer,
            len(self.rows),
            [u.word_errors for u in rates.utterances],
            by_bucket,
        )
