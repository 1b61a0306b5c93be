"""Word and character error rates with jiwer, after Whisper's English text normaliser.

The normaliser is openai/whisper's ``EnglishTextNormalizer`` with its British-to-American spelling map (the
``whisper-normalizer`` package, a port that needs no transformers; it gives the same text as transformers'
port on every transcript and reference of the demo, 638 texts), so numbers here compare with published
Whisper WERs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import jiwer

from mkdeploy.data import load_manifest
from mkdeploy.transcription.loading import load_transcriber


@lru_cache(maxsize=1)
def english_normalizer():
    """Whisper's English normaliser, with its spelling mapping."""
    from whisper_normalizer.english import EnglishTextNormalizer  # loads its rules and spelling map once

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    return english_normalizer()(text or "").strip()


@dataclass
class UtteranceScore:
    """Per-utterance errors (counts are on normalised text)."""

    id: str
    reference: str
    hypothesis: str
    wer: float
    cer: float
    ref_words: int
    word_errors: int
    ref_chars: int
    char_errors: int


@dataclass
class ErrorRates:
    """Corpus-level rates: total errors over total reference length (not a mean of per-utterance rates).

    Attributes:
        wer, cer: fractions (0.05 is 5%).
        utterances: per-utterance rows.
    """

    wer: float
    cer: float
    n: int
    ref_words: int
    ref_chars: int
    utterances: list[UtteranceScore] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _errors(ref: str, hyp: str, chars: bool) -> tuple[int, int]:
    """(errors, reference length). jiwer refuses empty references: every hypothesis unit is an insertion."""
    if chars:
        ref_units, hyp_units = len(ref), len(hyp)
    else:
        ref_units, hyp_units = len(ref.split()), len(hyp.split())
    if ref_units == 0:
        return hyp_units, 0
    if hyp_units == 0:
        return ref_units, ref_units
    out = jiwer.process_characters(ref, hyp) if chars else jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, ref_units


def error_rates(
    references: Sequence[str], hypotheses: Sequence[str], ids: Sequence[str] | None = None, normalise: bool = True
) -> ErrorRates:
    """WER and CER of ``hypotheses`` against ``references``.

    Args:
        references: reference transcripts.
        hypotheses: model transcripts, same order.
        ids: row identifiers for the per-utterance table.
        normalise: apply Whisper's English normaliser to both sides first.

    Returns:
        :class:`ErrorRates` with corpus-level fractions and per-utterance rows.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    ids = list(ids) if ids is not None else [str(i) for i in range(len(references))]
    rows = []
    tw = tc = ew = ec = 0
    for uid, ref, hyp in zip(ids, references, hypotheses):
        r, h = (normalize(ref), normalize(hyp)) if normalise else (ref.strip(), hyp.strip())
        we, wn = _errors(r, h, chars=False)
        ce, cn = _errors(r, h, chars=True)
        rows.append(
            UtteranceScore(
                uid, r, h, we / wn if wn else float(we > 0), ce / cn if cn else float(ce > 0), wn, we, cn, ce
            )
        )
        tw, tc, ew, ec = tw + wn, tc + cn, ew + we, ec + ce
    return ErrorRates(
        wer=ew / tw if tw else 0.0, cer=ec / tc if tc else 0.0, n=len(rows), ref_words=tw, ref_chars=tc, utterances=rows
    )


def wer_by_group(references: Sequence[str], hypotheses: Sequence[str], keys: Sequence) -> dict[str, dict]:
    """WER of each group of rows sharing a key (e.g. the encoder bucket that holds each clip).

    Returns:
        ``{str(key): {"clips": n, "wer": w}}`` in key order.
    """
    groups: dict = {}
    for k, key in enumerate(keys):
        groups.setdefault(key, []).append(k)
    return {
        str(key): {"clips": len(ks), "wer": error_rates([references[k] for k in ks], [hypotheses[k] for k in ks]).wer}
        for key, ks in sorted(groups.items())
    }


def evaluate_manifest(
    model_path: str | Path,
    manifest: str | Path,
    backend: str = "auto",
    device: str = "auto",
    options=None,
    on_progress=None,
    threads: int = 0,
    dtype: str = "auto",
):
    """Transcribe a manifest with a model and score it.

    Returns:
        (ErrorRates, transcriptions, failures). Unreadable files are listed in failures and left out of
        the rates.
    """

    rows = load_manifest(manifest, require_text=True)
    transcriber = load_transcriber(model_path, backend, device, threads, dtype)
    results, failures = transcriber.transcribe_files([r.audio for r in rows], options, on_progress=on_progress)
    by_path = {t.path: t for t in results}
    kept = [r for r in rows if str(r.audio) in by_path]
    rates = error_rates(
        [r.text or "" for r in kept], [by_path[str(r.audio)].text for r in kept], ids=[r.id for r in kept]
    )
    return rates, results, failures


def _plain_words(text: str) -> list[str]:
    # word by word: Whisper's normaliser rewrites numbers and spellings across words, which would break
    # the one-to-one map from a timed word to its normalised form
    return [w for w in ("".join(c for c in t.lower() if c.isalnum() or c == "'") for t in text.split()) if w]


def utterance_onset_errors(references: Sequence[str], onsets: Sequence[float], words: Sequence) -> list[float | None]:
    """How far each utterance's first word starts from its known onset, in a clip of joined utterances.

    The timed words are aligned to the joined references (jiwer's word alignment, case and punctuation
    ignored); an utterance's first word is the first timed word aligned, as a hit or a substitution, to
    any of its reference words.

    Args:
        references: each utterance's text, in order.
        onsets: each utterance's speech onset in seconds (:func:`mkdeploy.demo.synthesis.join_utterances`).
        words: the transcription's timed words (``.word``, ``.start``).

    Returns:
        start − onset per utterance, seconds (negative: placed early); None where no word of it was heard.
    """
    ref_words, owner = [], []
    for k, text in enumerate(references):
        ws = _plain_words(text)
        ref_words += ws
        owner += [k] * len(ws)
    hyp, timed = [], []
    for w in words:
        for p in _plain_words(w.word):
            hyp.append(p)
            timed.append(w.start)
    first: list[float | None] = [None] * len(references)
    if hyp and ref_words:
        out = jiwer.process_words(" ".join(ref_words), " ".join(hyp))
        for chunk in out.alignments[0]:
            if chunk.type not in ("equal", "substitute"):
                continue
            for r, h in zip(
                range(chunk.ref_start_idx, chunk.ref_end_idx), range(chunk.hyp_start_idx, chunk.hyp_end_idx)
            ):
                k = owner[r]
                if first[k] is None:
                    first[k] = timed[h]
    return [None if f is None else round(f - o, 3) for f, o in zip(first, onsets)]
