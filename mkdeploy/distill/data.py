"""Training data: pseudo-labels from the teacher and the teacher's outputs, computed once per sample.

The teacher is frozen, so what the recipe needs from it (hidden states of the paired layers at the valid
frames and paired positions, logits over the shared vocabulary at the paired positions) is the same every
epoch: it is computed in one pass and cached in the run directory (README, The recipe in a paragraph). One encoder pass per
clip serves both the pseudo-label and the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mkdeploy.audio import SAMPLE_RATE, load_audio
from mkdeploy.data import Utterance
from mkdeploy.distill.tokens import ForcedSequence, SharedVocab, force, force_segments, pair_positions, prompt_ids
from mkdeploy.errors import DataError

#: Audio samples per encoder frame (hop 160, conv stride 2).
SAMPLES_PER_FRAME = 320


def compression_ratio(text: str) -> float:
    """len(text) / len(zlib(text)): high for repetition loops (openai/whisper drops above 2.4)."""
    import zlib

    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def valid_frames(n_samples: int, max_frames: int = 1500) -> int:
    """Encoder frames that carry audio; the rest is padding and is masked out of the alignment."""
    return max(1, min(max_frames, -(-n_samples // SAMPLES_PER_FRAME)))


@dataclass
class TeacherNeeds:
    """What the recipe reads from the teacher."""

    encoder_layers: list[int]
    decoder_layers: list[int]
    logits: bool

    def key(self) -> str:
        return json.dumps([self.encoder_layers, self.decoder_layers, self.logits])


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


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pseudo_label_and_cache(
    rows: list[Utterance],
    teacher,
    teacher_processor,
    student_processor,
    student_generation_config,
    shared: SharedVocab,
    needs: TeacherNeeds,
    run_dir: Path,
    language: str = "en",
    pseudo_label: str = "missing",
    wer_threshold: float | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int], None] | None = None,
    timestamp_prob: float = 0.0,
    seed: int = 0,
) -> tuple[list[Sample], dict]:
    """Label the rows with the teacher where needed, cache its outputs, and pair positions.

    Args:
        rows: manifest rows (text optional).
        teacher: frozen ``WhisperForConditionalGeneration`` (eval mode).
        pseudo_label: "missing" (label rows without text) or "all" (train on the teacher's transcripts).
        wer_threshold: drop rows whose reference the teacher's transcript misses by more than this WER.
        timestamp_prob: share of clips taught in timestamp mode (:func:`timestamp_mode`); the cache does
            not depend on it.
        run_dir: the run directory; outputs go to run_dir/data (reused when the fingerprint matches).

    Returns:
        (samples, stats: rows kept and dropped, share of positions paired).
    """
    from mkdeploy.evaluate import error_rates

    data_dir = run_dir / "data"
    cache_dir = data_dir / "teacher"
    cache_dir.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(
        [str(r.audio) for r in rows],
        [r.text for r in rows],
        needs.key(),
        pseudo_label,
        wer_threshold,
        str(getattr(teacher, "name_or_path", "")),
        str(getattr(student_processor.tokenizer, "name_or_path", "")),
        teacher.config.to_dict().get("d_model"),
        len(shared),
        language,
    )
    labels_path = data_dir / "labels.jsonl"
    done: dict[str, dict] = {}
    if labels_path.exists():
        for line in labels_path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("fp") == fp:
                done[rec["id"]] = rec

    tok_s, tok_t = student_processor.tokenizer, teacher_processor.tokenizer
    prompt_s = prompt_ids(tok_s, student_generation_config, language)
    prompt_t = prompt_ids(tok_t, teacher.generation_config, language)
    device = next(teacher.parameters()).device
    todo = [r for r in rows if r.id not in done]
    gen_kw = (
        {"language": language, "task": "transcribe"} if getattr(teacher.generation_config, "lang_to_id", None) else {}
    )
    with open(labels_path, "a", encoding="utf-8") as log:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            audios = [load_audio(r.audio) for r in batch]
            feats = teacher_processor.feature_extractor(
                audios, sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features
            with torch.inference_mode():
                enc = teacher.model.encoder(feats.to(device), output_hidden_states=True)
                need_label = [pseudo_label == "all" or r.text is None or wer_threshold is not None for r in batch]
                teacher_text = [None] * len(batch)
                if any(need_label):
                    out = teacher.generate(
                        encoder_outputs=enc, return_timestamps=False, max_new_tokens=_token_cap(audios), **gen_kw
                    )
                    teacher_text = tok_t.batch_decode(out, skip_special_tokens=True)
                for k, (r, audio) in enumerate(zip(batch, audios)):
                    rec = {
                        "id": r.id,
                        "fp": fp,
                        "reference": r.text,
                        "teacher": (teacher_text[k] or "").strip() or None,
                    }
                    if wer_threshold is not None and r.text is not None:
                        rec["teacher_wer"] = error_rates([r.text], [rec["teacher"] or ""]).wer
                        if rec["teacher_wer"] > wer_threshold:
                            rec["dropped"] = f"teacher WER {rec['teacher_wer']:.2f} > {wer_threshold}"
                    text = rec["teacher"] if (pseudo_label == "all" or r.text is None) else r.text
                    if not text:
                        rec["dropped"] = rec.get("dropped", "empty transcript")
                    elif compression_ratio(text) > 2.4:
                        # openai/whisper's threshold: a repetition loop, not a transcript
                        rec["dropped"] = rec.get(
                            "dropped", f"repetitive transcript (ratio {compression_ratio(text):.1f})"
                        )
                    rec["text"] = text
                    if "dropped" not in rec:
                        s_seq, t_seq = force(tok_s, prompt_s, text), force(tok_t, prompt_t, text)
                        s_pos, t_pos = pair_positions(s_seq, t_seq)
                        payload = {}
                        n_valid = valid_frames(len(audio))
                        for j in needs.encoder_layers:
                            payload[f"enc_{j}"] = enc.hidden_states[j + 1][k, :n_valid].to(torch.float16).cpu()
                        if needs.decoder_layers or needs.logits:
                            ids = torch.tensor([t_seq.input_ids], device=device)
                            dec = teacher.model.decoder(
                                input_ids=ids,
                                encoder_hidden_states=enc.last_hidden_state[k : k + 1],
                                output_hidden_states=True,
                            )
                            tp = torch.tensor(t_pos, device=device)
                            for j in needs.decoder_layers:
                                payload[f"dec_{j}"] = dec.hidden_states[j + 1][0, tp].to(torch.float16).cpu()
                            if needs.logits:
                                logits = teacher.proj_out(dec.last_hidden_state[0, tp])
                                payload["logits"] = logits[:, shared.teacher_ids.to(device)].to(torch.float16).cpu()
                        name = f"{fp}_{hashlib.sha1(r.id.encode()).hexdigest()[:16]}.pt"
                        torch.save(payload, cache_dir / f".{name}.tmp")
                        (cache_dir / f".{name}.tmp").replace(cache_dir / name)
                        rec.update(
                            cache=name,
                            student_pos=s_pos,
                            n_student=len(s_seq.input_ids) - len(prompt_s) + 1,
                            n_teacher=len(t_seq.input_ids) - len(prompt_t) + 1,
                        )
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    done[r.id] = rec
            if on_progress:
                on_progress(len(batch))

    # The teacher's timed segments for the clips taught in timestamp mode, generated once and logged like
    # the labels (a later line for the same clip wins when the log is read back).
    todo = [
        r
        for r in rows
        if "dropped" not in done[r.id] and "segments" not in done[r.id] and timestamp_mode(r.id, timestamp_prob, seed)
    ]
    if todo:
        ts_begin = tok_t.convert_tokens_to_ids("<|notimestamps|>") + 1
        with open(labels_path, "a", encoding="utf-8") as log:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                audios = [load_audio(r.audio) for r in batch]
                feats = teacher_processor.feature_extractor(
                    audios, sampling_rate=SAMPLE_RATE, return_tensors="pt"
                ).input_features
                with torch.inference_mode():
                    out = teacher.generate(
                        feats.to(device),
                        return_timestamps=True,
                        return_segments=True,
                        max_new_tokens=_token_cap(audios),
                        **gen_kw,
                    )
                for r, segs in zip(batch, out["segments"]):
                    rec = done[r.id]
                    found = [
                        (
                            round(float(g["start"]), 2),
                            round(float(g["end"]), 2),
                            tok_t.decode(
                                [int(t) for t in g["tokens"] if int(t) < ts_begin], skip_special_tokens=True
                            ).strip(),
                        )
                        for g in segs
                    ]
                    # inside the window; a segment without text or ending before it starts is dropped
                    rec["segments"] = [[min(30.0, max(0.0, a)), min(30.0, b), t] for a, b, t in found if t and b >= a]
                    log.write(json.dumps(rec) + "\n")
                    log.flush()

    samples, dropped, paired, total, timed = [], 0, 0, 0, 0
    for r in rows:
        rec = done[r.id]
        if "dropped" in rec:
            dropped += 1
            continue
        audio = load_audio(r.audio)
        if timestamp_mode(r.id, timestamp_prob, seed) and rec.get("segments"):
            # taught in timestamp mode on the teacher's segments, cross-entropy only: no position pairs
            # with the cached teacher rows
            s_seq = force_segments(tok_s, prompt_s[:-1], [tuple(g) for g in rec["segments"]])
            samples.append(
                Sample(
                    r.id, audio, " ".join(g[2] for g in rec["segments"]), s_seq, [], cache_dir / rec["cache"], 0, True
                )
            )
            timed += 1
            continue
        s_seq = force(tok_s, prompt_s, rec["text"])
        samples.append(
            Sample(
                r.id, audio, rec["text"], s_seq, rec["student_pos"], cache_dir / rec["cache"], len(rec["student_pos"])
            )
        )
        paired += len(rec["student_pos"])
        total += rec["n_student"]
    if not samples:
        raise DataError(f"no training rows left ({dropped} dropped by --wer-threshold or empty transcripts)")
    stats = {
        "rows": len(rows),
        "kept": len(samples),
        "dropped": dropped,
        "timestamped": timed,
        "paired_share": paired / total if total else 1.0,
    }
    return samples, stats


def _token_cap(audios) -> int:
    """The transcriber's loop guard for the teacher: 8 tokens per second of the longest clip, plus 20."""
    return min(220, int(8 * max(len(a) for a in audios) / SAMPLE_RATE) + 20)


def timestamp_mode(clip_id: str, prob: float, seed: int = 0) -> bool:
    """Whether a clip trains in timestamp mode: a fixed, seeded share ``prob`` of the clips (by id, so the
    choice survives resumes and is the same on every rank)."""
    if prob <= 0:
        return False
    h = int(hashlib.sha1(f"{seed}:{clip_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < prob
