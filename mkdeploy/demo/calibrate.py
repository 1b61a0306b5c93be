"""Choosing the demo corpus by measurement: which voices and noise levels leave a gap worth distilling.

Distillation can only hand over what the teacher knows: on audio the teacher itself cannot transcribe its
distribution is no target, and on audio the untrained student already transcribes as well as the teacher
there is nothing to close. So before the corpus is fixed, teacher and student (both PyTorch fp32, one
decoding configuration) transcribe a calibration split — every training voice at every noise level, on
sentences of the training pool (never a held-out one) — and a condition is kept only where

* the teacher transcribes well: WER ≤ ``max_teacher_wer``, and
* the student is clearly worse: WER ≥ ``min_ratio`` × the teacher's.

Voices are judged pooled over the mild bands (:data:`MILD_BANDS`), noise levels pooled over the kept
voices, so each decision rests on a dozen clips or more rather than one cell of the grid. ``benchmarks/calibrate_corpus.py``
runs it and writes ``benchmarks/results/corpus_calibration.md``; :class:`~mkdeploy.demo.corpus.CorpusSpec`'s
defaults are what that table kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.demo.augment import AugmentSpec, augment
from mkdeploy.demo.synthesis import Voice, synthesize
from mkdeploy.evaluate import error_rates
from mkdeploy.fsutil import atomic_write_text
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

#: noise bands of the calibration grid (dB SNR); None is the chain without added noise
DEFAULT_BANDS: tuple[tuple[float, float] | None, ...] = (None, (20.0, 30.0), (10.0, 20.0), (5.0, 10.0), (0.0, 5.0))


def band_label(band: tuple[float, float] | None) -> str:
    return "no noise" if band is None else f"{band[0]:g}-{band[1]:g} dB"


@dataclass
class ConditionScore:
    """Word errors of teacher and student on the clips of one (voice, noise band) cell.

    Attributes:
        voice: ``engine/name``.
        band: the noise band's label (:func:`band_label`).
    """

    voice: str
    band: str
    clips: int
    ref_words: int
    teacher_errors: int
    student_errors: int

    @property
    def teacher_wer(self) -> float:
        return self.teacher_errors / max(self.ref_words, 1)

    @property
    def student_wer(self) -> float:
        return self.student_errors / max(self.ref_words, 1)


@dataclass
class Decision:
    """One pooled group (a voice, or a noise band) and whether the corpus keeps it."""

    name: str
    clips: int
    ref_words: int
    teacher_wer: float
    student_wer: float
    keep: bool
    reason: str


def _pool(cells: list[ConditionScore]) -> tuple[int, int, float, float]:
    words = sum(c.ref_words for c in cells)
    teacher = sum(c.teacher_errors for c in cells) / max(words, 1)
    student = sum(c.student_errors for c in cells) / max(words, 1)
    return sum(c.clips for c in cells), words, teacher, student


def decide(
    cells: Iterable[ConditionScore],
    group: Callable[[ConditionScore], str],
    max_teacher_wer: float,
    min_ratio: float,
) -> list[Decision]:
    """Pool ``cells`` by ``group`` and keep the groups where the teacher is good and the student clearly worse.

    Args:
        group: the pooling key, e.g. ``lambda c: c.voice``.
        max_teacher_wer: the teacher's pooled WER must not exceed this (a fraction).
        min_ratio: the student's pooled WER must be at least this multiple of the teacher's.

    Returns:
        one :class:`Decision` per group, in key order.
    """
    groups: dict[str, list[ConditionScore]] = {}
    for c in cells:
        groups.setdefault(group(c), []).append(c)
    out = []
    for name, members in sorted(groups.items()):
        clips, words, teacher, student = _pool(members)
        if teacher > max_teacher_wer:
            keep, reason = False, f"teacher WER {100 * teacher:.1f}% > {100 * max_teacher_wer:.0f}%"
        elif student < min_ratio * teacher or student <= teacher:
            keep, reason = False, f"student {100 * student:.1f}% < {min_ratio:g} x teacher {100 * teacher:.1f}%"
        else:
            keep, reason = True, f"teacher {100 * teacher:.1f}%, student {student / max(teacher, 1e-9):.1f}x"
        out.append(Decision(name, clips, words, teacher, student, keep, reason))
    return out


@dataclass
class Calibration:
    """The grid's cells and the two pooled decisions: voices first, then noise bands over the kept voices."""

    cells: list[ConditionScore]
    voices: list[Decision]
    bands: list[Decision]
    max_teacher_wer: float
    min_ratio: float
    meta: dict = field(default_factory=dict)

    @property
    def kept_voices(self) -> list[str]:
        return [d.name for d in self.voices if d.keep]

    @property
    def kept_bands(self) -> list[str]:
        return [d.name for d in self.bands if d.keep]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


#: the bands a voice is judged on: how well it can be heard at all, before noise levels are chosen
MILD_BANDS = ("no noise", "20-30 dB")


def calibrate(
    cells: list[ConditionScore],
    max_teacher_wer: float = 0.08,
    min_ratio: float = 1.3,
    voice_bands: tuple[str, ...] = MILD_BANDS,
) -> Calibration:
    """Voices pooled over ``voice_bands`` (a voice is not blamed for the noise levels that will be dropped
    anyway), then every band pooled over the kept voices (see the module docstring)."""
    voices = decide([c for c in cells if c.band in voice_bands], lambda c: c.voice, max_teacher_wer, min_ratio)
    kept = {d.name for d in voices if d.keep}
    bands = decide([c for c in cells if c.voice in kept], lambda c: c.band, max_teacher_wer, min_ratio)
    return Calibration(cells, voices, bands, max_teacher_wer, min_ratio, {"voice_bands": list(voice_bands)})


def build_grid(
    out: Path,
    texts: list[str],
    voices: list[tuple[str, str]],
    bands: tuple[tuple[float, float] | None, ...] = DEFAULT_BANDS,
    per_cell: int = 6,
    augment_spec: AugmentSpec | None = None,
    rate: tuple[float, float] = (0.9, 1.1),
    seed: int = 0,
    workers: int = 2,
) -> Path:
    """Synthesise ``per_cell`` clips for each (voice, band), each text used once; returns the manifest.

    The rest of the augmentation chain (tempo, pitch, reverb, telephone band, hum) stays as in
    ``augment_spec``; only the added noise is fixed to the cell's band (always on, or off).
    """
    import soundfile as sf  # imported on use: libsndfile loads on first audio read

    base = augment_spec or AugmentSpec()
    out.mkdir(parents=True, exist_ok=True)
    plans = []
    k = 0
    for engine, name in voices:
        for band in bands:
            spec = replace(base, p_noise=0.0) if band is None else replace(base, p_noise=1.0, snr_db=band)
            for _ in range(per_cell):
                rng = np.random.default_rng([seed, 7, k])
                plans.append(
                    {
                        "id": f"cal_{k:04d}",
                        "text": texts[k % len(texts)],
                        "voice": f"{engine}/{name}",
                        "band": band_label(band),
                        "rate": round(float(rng.uniform(*rate)), 3),
                        "engine": engine,
                        "name": name,
                        "spec": spec,
                        "seed": [seed, 8, k],
                    }
                )
                k += 1

    def make(p: dict) -> None:
        path = out / f"{p['id']}.wav"
        if not path.exists():
            audio = synthesize(p["text"], Voice(p["engine"], p["name"], p["rate"]))
            audio = augment(audio, p["seed"], p["spec"])
            tmp = path.with_name(f".{path.name}.tmp.wav")
            sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16")
            tmp.replace(path)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(make, plans))
    rows = [
        {"id": p["id"], "audio": f"{p['id']}.wav", "text": p["text"], "voice": p["voice"], "band": p["band"]}
        for p in plans
    ]
    return atomic_write_text(out / "calibration.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


@dataclass
class ClipScores:
    """One model's per-clip scores on a calibration split, in the order of its audio paths."""

    word_errors: list[int]
    ref_words: list[int]
    wer: float


def score_clips(model_dir: Path, audio: list[Path], refs: list[str]) -> ClipScores:
    """Transcribe ``audio`` with the model at ``model_dir`` (PyTorch fp32, English) and score each clip.

    Args:
        model_dir: a local Whisper directory.
        audio: clip paths; a clip the transcriber skips scores as an empty hypothesis.
        refs: the reference text of each clip.

    Returns:
        per-clip word errors and reference words, and the pooled WER.
    """
    tr = WhisperTranscriber.from_pretrained(model_dir, device="cpu")
    res, _ = tr.transcribe_files(audio, TranscriptionOptions(language="en", return_timestamps=False))
    by = {r.path: r.text for r in res}
    scored = error_rates(refs, [by.get(str(a), "") for a in audio])
    return ClipScores([u.word_errors for u in scored.utterances], [u.ref_words for u in scored.utterances], scored.wer)


def cells_from_errors(
    rows: list[dict], words: list[int], teacher: list[int], student: list[int]
) -> list[ConditionScore]:
    """Sum per-clip word errors into (voice, band) cells; ``rows`` are the manifest's rows."""
    cells: dict[tuple[str, str], ConditionScore] = {}
    for r, w, t, s in zip(rows, words, teacher, student):
        c = cells.setdefault((r["voice"], r["band"]), ConditionScore(r["voice"], r["band"], 0, 0, 0, 0))
        c.clips += 1
        c.ref_words += w
        c.teacher_errors += t
        c.student_errors += s
    return list(cells.values())


def markdown(cal: Calibration) -> str:
    """The calibration table: every cell, then both decisions."""
    bands = list(dict.fromkeys(c.band for c in cal.cells))
    voices = list(dict.fromkeys(c.voice for c in cal.cells))
    by = {(c.voice, c.band): c for c in cal.cells}
    lines = [
        "WER teacher / student (PyTorch fp32, greedy, batch 8), per cell:",
        "",
        "| voice | " + " | ".join(bands) + " |",
        "|---|" + "--:|" * len(bands),
    ]
    for v in voices:
        lines.append(
            f"| {v} | "
            + " | ".join(
                f"{100 * by[v, b].teacher_wer:.1f} / {100 * by[v, b].student_wer:.1f}" if (v, b) in by else ""
                for b in bands
            )
            + " |"
        )
    pooled = ", ".join(cal.meta.get("voice_bands", MILD_BANDS))
    for title, decisions in ((f"Voices (pooled over {pooled})", cal.voices), ("Noise bands (kept voices)", cal.bands)):
        lines += [
            "",
            f"{title}: keep when teacher ≤ {100 * cal.max_teacher_wer:.0f}% and student ≥ {cal.min_ratio:g} x teacher",
            "",
            "| group | clips | words | teacher | student | kept | why |",
            "|---|--:|--:|--:|--:|---|---|",
        ]
        lines += [
            f"| {d.name} | {d.clips} | {d.ref_words} | {100 * d.teacher_wer:.1f}% | {100 * d.student_wer:.1f}% | "
            f"{'yes' if d.keep else 'no'} | {d.reason} |"
            for d in decisions
        ]
    return "\n".join(lines) + "\n"
