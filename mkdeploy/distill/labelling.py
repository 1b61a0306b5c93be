"""Labelling a run's rows with the teacher, here or on other workers: :func:`pseudo_label_and_cache` runs the
teacher's pass (:class:`mkdeploy.distill.teacher_pass.TeacherPass`) over the rows still to label and stores each
row once; a :class:`Labeller` (Ray's, mkdeploy/distributed/label.py) computes them elsewhere from a picklable
:class:`TeacherPassSpec`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mkdeploy.data import Utterance
from mkdeploy.distill.records import (
    LabelRecord,
    LabelRules,
    Sample,
    TeacherNeeds,
)
from mkdeploy.distill.teacher_pass import TeacherPass, resolved_path


def pseudo_label_and_cache(
    rows: list[Utterance],
    tp: TeacherPass,
    rules: LabelRules,
    batch_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
    labeller: Labeller | None = None,
) -> tuple[list[Sample], dict]:
    """Label the rows with the teacher where needed, cache its outputs, and pair positions.

    Args:
        rows: manifest rows (text optional).
        tp: the teacher's pass (the teacher, both tokenizers, what to cache, where).
        rules: how rows are labelled and filtered.
        batch_size: rows per teacher batch.
        on_progress: called with the number of rows just stored.
        labeller: computes the rows still to label elsewhere (``mkdeploy.distributed.label.RayLabeller``:
            teacher actors on Ray Data); this process stores what it returns. None: here, in batches.

    Returns:
        (samples, stats: rows kept and dropped, share of positions paired).
    """
    rules.check()
    fp = tp.fingerprint(rows, rules)
    done = tp.read_log(fp)
    todo = [r for r in rows if r.id not in done]
    spec = TeacherPassSpec(
        resolved_path(getattr(tp.teacher, "name_or_path", "")),
        resolved_path(getattr(tp.tok_s, "name_or_path", "")),
        tp.needs,
        tp.language,
        fp,
        rules,
        batch_size,
    )

    def here(todo: list[Utterance], spec: TeacherPassSpec) -> Iterator[tuple[LabelRecord, dict | None]]:
        for start in range(0, len(todo), batch_size):
            yield from spec.compute(tp, todo[start : start + batch_size])

    # Computed elsewhere (a labeller) or here, stored here; what a labeller left undone is computed here.
    for source in (labeller, here) if labeller is not None else (here,):
        pending = [r for r in todo if r.id not in done]
        for rec, payload in source(pending, spec) if pending else ():
            if rec.id not in done:
                done[rec.id] = tp.store(rec, payload)
                if on_progress:
                    on_progress(1)
    # Timed segments still missing (a pass labelled before timestamp_prob was raised): generated now and
    # logged like the labels (a later line for the same clip wins when the log is read back).
    missing = [r for r in rows if done[r.id].dropped is None and done[r.id].segments is None and rules.timed(r)]
    for start in range(0, len(missing), batch_size):
        tp.segments(missing[start : start + batch_size], done)
    return tp.samples(rows, done, rules.timed)


@dataclass
class TeacherPassSpec:
    """What another process needs to run the teacher's pass exactly as this one would (model directories,
    the outputs to cache, the labelling rules and the run's fingerprint), picklable."""

    teacher: str
    student: str
    needs: TeacherNeeds
    language: str
    fingerprint: str
    rules: LabelRules = field(default_factory=LabelRules)
    batch_size: int = 8

    def open(self) -> TeacherPass:
        """Load the teacher and the student's tokenizer and prompt; the pass writes nowhere (run_dir None)."""
        from transformers import GenerationConfig, WhisperProcessor

        from mkdeploy.distill.tokens import shared_vocab
        from mkdeploy.models.student import load_whisper

        teacher, t_proc = load_whisper(self.teacher)
        # Ray hides the GPUs an actor did not reserve (CUDA_VISIBLE_DEVICES), so a visible one is ours
        teacher.eval().requires_grad_(False).to("cuda" if torch.cuda.is_available() else "cpu")
        s_proc: Any = WhisperProcessor.from_pretrained(self.student)
        s_gen = GenerationConfig.from_pretrained(self.student)
        shared = shared_vocab(s_proc.tokenizer, t_proc.tokenizer)
        return TeacherPass(teacher, t_proc, s_proc, s_gen, shared, self.needs, None, self.language)

    def compute(
        self, tp: TeacherPass, batch: list[Utterance]
    ) -> list[tuple[LabelRecord, dict[str, torch.Tensor] | None]]:
        """:meth:`TeacherPass.compute` with this spec's fingerprint and rules."""
        return tp.compute(batch, self.fingerprint, self.rules)


class Labeller(Protocol):
    """Computes the teacher's pass for ``rows`` somewhere else and yields (record, cached outputs) per row,
    in any order; :func:`pseudo_label_and_cache` stores them (the first result of a row wins)."""

    def __call__(
        self, rows: list[Utterance], spec: TeacherPassSpec
    ) -> Iterator[tuple[LabelRecord, dict[str, torch.Tensor] | None]]: ...
