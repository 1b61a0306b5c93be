"""The demo's scoring: a model transcribes a test set with the one decoding configuration behind every score
(:func:`mkdeploy.options.scoring_options`) and is scored overall, by speech engine and per clip, cached."""

from __future__ import annotations

import json
from pathlib import Path

from mkdeploy.audio import load_audio
from mkdeploy.bench.runners import CT2Runner
from mkdeploy.data import load_manifest
from mkdeploy.demo.corpus import TEST_SPLITS, manifest_rows
from mkdeploy.evaluate import error_rates, wer_by_group
from mkdeploy.fsutil import atomic_write_text
from mkdeploy.models.dirs import is_ct2_dir
from mkdeploy.options import scoring_options
from mkdeploy.transcription.runtime import WhisperTranscriber

#: clips per call when scoring (:data:`~mkdeploy.demo.report.DECODING`)
SCORE_BATCH = 8


def score(model: Path | WhisperTranscriber | CT2Runner, manifest: Path, cache: Path) -> dict:
    """Transcribe a test manifest (:data:`~mkdeploy.demo.report.DECODING`) and score it, overall, by engine
    and per clip (word errors and reference words, what the bootstrap resamples); cached in ``cache``.

    ``model``: a directory, or a model already loaded (one load serves the three test sets): a transcriber,
    or CTranslate2 (greedy, no timestamps, batches of :data:`SCORE_BATCH`)."""
    if cache.exists():
        return json.loads(cache.read_text())
    rows = manifest_rows(manifest)
    utts = load_manifest(manifest, require_text=True)
    tr = model if isinstance(model, WhisperTranscriber | CT2Runner) else _load_scorer(model)
    if isinstance(tr, CT2Runner):
        audios = [load_audio(u.audio) for u in utts]
        hyps = [
            t for i in range(0, len(audios), SCORE_BATCH) for t, _ in tr.transcribe_batch(audios[i : i + SCORE_BATCH])
        ]
    else:
        options = scoring_options("en", batch_size=SCORE_BATCH)
        res, _ = tr.transcribe_files([u.audio for u in utts], options)
        by = {t.path: t.text for t in res}
        hyps = [by.get(str(u.audio), "") for u in utts]
    refs = [u.text or "" for u in utts]
    scored = error_rates(refs, hyps)
    out = {
        "wer": scored.wer,
        "by_engine": wer_by_group(refs, hyps, [r["engine"] for r in rows]),
        "word_errors": [u.word_errors for u in scored.utterances],
        "ref_words": [u.ref_words for u in scored.utterances],
        "hypotheses": hyps,
    }
    atomic_write_text(cache, json.dumps(out, indent=1) + "\n")
    return out


def _load_scorer(model: Path) -> WhisperTranscriber | CT2Runner:
    if is_ct2_dir(model):
        return CT2Runner(model, "cpu", "en", compute_type="int8")
    return WhisperTranscriber.from_pretrained(model, device="cpu")


def score_model(model: Path, corpus, scores_dir: Path, name: str) -> dict[str, dict]:
    """:func:`score` on each test set, the model loaded once (and not at all when every score is cached)."""
    caches = {split: scores_dir / f"{name}.{split}.json" for split in TEST_SPLITS}
    tr = None
    if not all(c.exists() for c in caches.values()):
        tr = _load_scorer(model)
    return {split: score(tr or model, corpus[split], caches[split]) for split in TEST_SPLITS}
