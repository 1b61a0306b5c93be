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
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from mkdeploy.audio import SAMPLE_RATE, load_audio
from mkdeploy.constants import CHUNK_S, COMPRESSION_RATIO_MAX, SAMPLES_PER_FRAME
from mkdeploy.data import Utterance
from mkdeploy.distill.records import (
    ForcedPass,
    LabelRecord,
    LabelRules,
    Sample,
    TeacherNeeds,
    TeacherOutputs,
)
from mkdeploy.distill.tokens import ForcedSequence, SharedVocab, force, force_segments, pair_positions, prompt_ids
from mkdeploy.errors import DataError
from mkdeploy.evaluate import error_rates
from mkdeploy.options import TranscriptionOptions
from mkdeploy.transcription.decoding import text_compression_ratio, token_cap


def valid_frames(n_samples: int, max_frames: int = 1500) -> int:
    """Encoder frames that carry audio; the rest is padding and is masked out of the alignment."""
    return max(1, min(max_frames, -(-n_samples // SAMPLES_PER_FRAME)))


def resolved_path(name: str | Path) -> str:
    """A local path as an absolute one (a hub id as given), so a run started from another directory, or
    with a relative path, finds the same cache."""
    p = Path(name)
    return str(p.resolve()) if str(name) and p.exists() else str(name)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TeacherPass:
    """The teacher's one pass over the training rows: transcripts where needed, the cached outputs the
    recipe reads (:class:`TeacherNeeds`), the position pairing, and the timed segments of timestamp-mode
    clips. Every finished row is a line of ``run_dir/data/labels.jsonl``, so a killed pass resumes."""

    def __init__(
        self,
        teacher,
        teacher_processor,
        student_processor,
        student_generation_config,
        shared: SharedVocab,
        needs: TeacherNeeds,
        run_dir: Path | None,
        language: str,
    ):
        self.teacher, self.t_proc, self.s_proc = teacher, teacher_processor, student_processor
        self.shared, self.needs, self.language = shared, needs, language
        # run_dir None: a pass that only computes (a Ray actor); its caller stores the results
        self.data_dir = (run_dir or Path(".")) / "data"
        self.cache_dir = self.data_dir / "teacher"
        if run_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.labels_path = self.data_dir / "labels.jsonl"
        self.tok_s, self.tok_t = student_processor.tokenizer, teacher_processor.tokenizer
        self.prompt_s = prompt_ids(self.tok_s, student_generation_config, language)
        self.prompt_t = prompt_ids(self.tok_t, teacher.generation_config, language)
        self.device = next(teacher.parameters()).device
        self.gen_kw = (
            {"language": language, "task": "transcribe"}
            if getattr(teacher.generation_config, "lang_to_id", None)
            else {}
        )

    def fingerprint(self, rows: list[Utterance], rules: LabelRules) -> str:
        """What the labels and cache depend on: a changed input starts them afresh (not the timestamp
        share or the seed: the cache does not depend on them)."""
        return _fingerprint(
            *([rules.teacher_filter] if rules.teacher_filter != "generated" else []),  # earlier prints stay valid
            *([rules.min_avg_logprob] if rules.min_avg_logprob is not None else []),
            [resolved_path(r.audio) for r in rows],
            [r.text for r in rows],
            self.needs.key(),
            rules.pseudo_label,
            rules.wer_threshold,
            resolved_path(getattr(self.teacher, "name_or_path", "")),
            resolved_path(getattr(self.tok_s, "name_or_path", "")),
            self.teacher.config.to_dict().get("d_model"),
            len(self.shared),
            self.language,
        )

    def read_log(self, fp: str) -> dict[str, LabelRecord]:
        """Rows already labelled under this fingerprint (the last line of a row wins)."""
        done: dict[str, LabelRecord] = {}
        if self.labels_path.exists():
            for line in self.labels_path.read_text().splitlines():
                d = json.loads(line)
                if d.get("fp") == fp:
                    done[d["id"]] = LabelRecord.from_json(d)
        return done

    def _log(self, rec: LabelRecord) -> None:
        with open(self.labels_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(rec.to_json()) + "\n")

    def _features(self, audios: list[np.ndarray]) -> torch.Tensor:
        return self.t_proc.feature_extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features

    def compute(
        self, batch: list[Utterance], fp: str, rules: LabelRules
    ) -> list[tuple[LabelRecord, dict[str, torch.Tensor] | None]]:
        """The records and cached outputs of ``batch``, written nowhere: :meth:`store` writes them, in the
        process that owns the run directory (a Ray actor returns them to it). One encoder pass serves the transcript (when one is
        needed), every cached output and the timed segments of the clips taught in timestamp mode.

        ``rules.teacher_filter``: how ``rules.wer_threshold`` reads the teacher on a row with a reference:
        "generated" scores its free-running transcript (a ``generate`` call per batch); "forced" scores its
        argmax at each reference position given the reference before it, from the decoder pass the
        cache needs anyway (no ``generate``: a third of the pass's time on base, 2 CPU cores). Forced
        is the teacher's accuracy along the very sequence whose distributions it hands over.

        ``rules.min_avg_logprob``: rows whose training text is the teacher's own transcript are dropped when the
        teacher's mean log-probability along it is below this: read from the same decoder pass.

        Returns:
            per row, its label record and the teacher outputs to cache (None for a dropped row).
        """
        audios = [load_audio(r.audio) for r in batch]
        out: list[tuple[LabelRecord, dict[str, torch.Tensor] | None]] = []
        wer_threshold, min_avg_logprob = rules.wer_threshold, rules.min_avg_logprob
        forced = rules.teacher_filter == "forced" and rules.pseudo_label != "all"
        with torch.inference_mode():
            enc = self.teacher.model.encoder(self._features(audios).to(self.device), output_hidden_states=True)
            teacher_text: list[str | None] = [None] * len(batch)
            if any(rules.labelled_by_teacher(r) or (wer_threshold is not None and not forced) for r in batch):
                ids = self.teacher.generate(
                    encoder_outputs=enc,
                    return_timestamps=False,
                    max_new_tokens=_token_cap(self.teacher, audios),
                    **self.gen_kw,
                )
                teacher_text = self.tok_t.batch_decode(ids, skip_special_tokens=True)
            for k, (r, audio) in enumerate(zip(batch, audios)):
                dec = None
                if forced and wer_threshold is not None and r.text is not None:
                    # the filter reads the teacher along the reference: the decoder pass the cache needs anyway
                    dec = self._forced(force(self.tok_t, self.prompt_t, r.text), enc, k, read=True)
                    teacher_text[k] = dec.text
                rec = _judge(r, fp, teacher_text[k], rules)
                if dec is not None:
                    rec.filter = "forced"
                if min_avg_logprob is not None and rules.labelled_by_teacher(r) and rec.dropped is None:
                    # a pseudo-label: the teacher's confidence in it, from the pass the cache needs anyway
                    dec = self._forced(force(self.tok_t, self.prompt_t, rec.text), enc, k)
                    rec.avg_logprob = round(dec.avg_logprob(), 4)
                    if rec.avg_logprob < min_avg_logprob:
                        rec.dropped = f"teacher avg log-prob {rec.avg_logprob:.2f} < {min_avg_logprob}"
                payload = None
                if rec.dropped is None:
                    payload = self._outputs(rec, r, enc, k, len(audio), dec)
                    if rules.timed(r):
                        # the timed segments from the same encoder states, no second encoder pass; one clip at
                        # a time, as transformers' segment loop cuts a finished row out of input_features,
                        # which encoder_outputs leaves unset
                        states = BaseModelOutput(last_hidden_state=enc.last_hidden_state[k : k + 1])
                        rec.segments = self._generate_segments(states, [audio])[0]
                out.append((rec, payload))
        return out

    def _forced(self, t_seq: ForcedSequence, enc, k: int, read: bool = False) -> ForcedPass:
        """The teacher's decoder along a forced sequence over row ``k``'s encoder states, and (``read``:
        for the filter only) its argmax at each label position read as text, special and timestamp
        tokens left out."""
        dec = self.teacher.model.decoder(
            input_ids=torch.tensor([t_seq.input_ids], device=self.device),
            encoder_hidden_states=enc.last_hidden_state[k : k + 1],
            output_hidden_states=True,
        )
        logits = self.teacher.proj_out(dec.last_hidden_state[0])
        text = ""
        if read:
            start = len(self.prompt_t) - 1  # the position that predicts the first text token
            best = logits[start:-1].argmax(-1).tolist()
            eot = self.tok_t.convert_tokens_to_ids("<|endoftext|>")
            text = self.tok_t.decode([t for t in best if t < eot], skip_special_tokens=True).strip()
        return ForcedPass(t_seq, dec, logits, text)

    def store(self, rec: LabelRecord, payload: dict[str, torch.Tensor] | None) -> LabelRecord:
        """Write a row's cached outputs (atomically), then its line in ``labels.jsonl``: a line is only
        logged once its cache file is whole, so a killed pass resumes without reading a torn file."""
        if payload is not None:
            assert rec.cache is not None
            tmp = self.cache_dir / f".{rec.cache}.tmp"
            torch.save(payload, tmp)
            tmp.replace(self.cache_dir / rec.cache)
        self._log(rec)
        return rec

    def _generate_segments(self, encoder_outputs, audios: list[np.ndarray]) -> list[list]:
        """The teacher's timed segments [start, end, text], inside the 30 s window, empty ones dropped."""
        ts_begin = self.tok_t.convert_tokens_to_ids("<|notimestamps|>") + 1
        out = self.teacher.generate(
            encoder_outputs=encoder_outputs,
            return_timestamps=True,
            return_segments=True,
            max_new_tokens=_token_cap(self.teacher, audios),
            **self.gen_kw,
        )
        result = []
        for segs in out["segments"]:
            found = [
                (
                    round(float(g["start"]), 2),
                    round(float(g["end"]), 2),
                    self.tok_t.decode(
                        [int(t) for t in g["tokens"] if int(t) < ts_begin], skip_special_tokens=True
                    ).strip(),
                )
                for g in segs
            ]
            result.append([[min(CHUNK_S, max(0.0, a)), min(CHUNK_S, b), t] for a, b, t in found if t and b >= a])
        return result

    def _outputs(
        self, rec: LabelRecord, r: Utterance, enc, k: int, n_samples: int, forced: ForcedPass | None = None
    ) -> dict[str, torch.Tensor]:
        """The teacher's outputs for row ``k`` of the batch at the paired positions (what to cache); fills
        the record's pairing fields and the cache file's name. ``forced``: the decoder pass along
        ``rec.text`` when the filter already ran it."""
        text = rec.text
        s_seq = force(self.tok_s, self.prompt_s, text)
        t_seq = forced.seq if forced is not None else force(self.tok_t, self.prompt_t, text)
        s_pos, t_pos = pair_positions(s_seq, t_seq)
        out = TeacherOutputs()
        n_valid = valid_frames(n_samples)
        for j in self.needs.encoder_layers:
            out.encoder[j] = enc.hidden_states[j + 1][k, :n_valid].to(torch.float16).cpu()
        if self.needs.decoder_layers or self.needs.logits:
            teacher = forced or self._forced(t_seq, enc, k)
            tp = torch.tensor(t_pos, device=self.device)
            for j in self.needs.decoder_layers:
                out.decoder[j] = teacher.out.hidden_states[j + 1][0, tp].to(torch.float16).cpu()
            if self.needs.logits:
                logits = teacher.logits[tp]
                out.logits = logits[:, self.shared.teacher_ids.to(self.device)].to(torch.float16).cpu()
        rec.cache = f"{rec.fp}_{hashlib.sha1(r.id.encode()).hexdigest()[:16]}.pt"
        rec.student_pos = s_pos
        rec.n_student = len(s_seq.input_ids) - len(self.prompt_s) + 1
        rec.n_teacher = len(t_seq.input_ids) - len(self.prompt_t) + 1
        return out.to_payload()

    def segments(self, batch: list[Utterance], done: dict[str, LabelRecord]) -> None:
        """The teacher's timed segments of ``batch`` (timestamp-mode clips), added to their records."""
        audios = [load_audio(r.audio) for r in batch]
        with torch.inference_mode():
            enc = self.teacher.model.encoder(self._features(audios).to(self.device))
            found = self._generate_segments(enc, audios)
        for r, segs in zip(batch, found):
            done[r.id].segments = segs
            self._log(done[r.id])

    def samples(
        self, rows: list[Utterance], done: dict[str, LabelRecord], timed: Callable[[Utterance], bool]
    ) -> tuple[list[Sample], dict]:
        """The kept rows as training samples, and the pass's statistics."""
        samples, dropped, paired, total, n_timed = [], 0, 0, 0, 0
        for r in rows:
            rec = done[r.id]
            if rec.dropped is not None:
                dropped += 1
                continue
            assert rec.cache is not None and rec.student_pos is not None and rec.n_student is not None
            audio = load_audio(r.audio)
            cache = self.cache_dir / rec.cache
            if timed(r) and rec.segments:
                # taught in timestamp mode on the teacher's segments, cross-entropy only: no position pairs
                # with the cached teacher rows
                s_seq = force_segments(self.tok_s, self.prompt_s[:-1], [tuple(g) for g in rec.segments])
                text = " ".join(g[2] for g in rec.segments)
                samples.append(Sample(r.id, audio, text, s_seq, [], cache, 0, True))
                n_timed += 1
                continue
            s_seq = force(self.tok_s, self.prompt_s, rec.text)
            samples.append(Sample(r.id, audio, rec.text, s_seq, rec.student_pos, cache, len(rec.student_pos)))
            paired += len(rec.student_pos)
            total += rec.n_student
        if not samples:
            raise DataError(f"no training rows left ({dropped} dropped by --wer-threshold or empty transcripts)")
        stats = {
            "rows": len(rows),
            "kept": len(samples),
            "dropped": dropped,
            "timestamped": n_timed,
            "paired_share": paired / total if total else 1.0,
        }
        return samples, stats


def _judge(r: Utterance, fp: str, teacher_text: str | None, rules: LabelRules) -> LabelRecord:
    """A row's label record: the text it trains on, or why it is dropped (teacher too far from the
    reference, empty, or a repetition loop)."""
    rec = LabelRecord(r.id, fp, r.text, (teacher_text or "").strip() or None)
    if rules.wer_threshold is not None and r.text is not None:
        rec.teacher_wer = error_rates([r.text], [rec.teacher or ""]).wer
        if rec.teacher_wer > rules.wer_threshold:
            rec.dropped = f"teacher WER {rec.teacher_wer:.2f} > {rules.wer_threshold}"
    text = (rec.teacher or "") if rules.labelled_by_teacher(r) else (r.text or "")
    if not text:
        rec.dropped = rec.dropped or "empty transcript"
    elif (ratio := text_compression_ratio(text)) > COMPRESSION_RATIO_MAX:
        # openai/whisper's threshold: a repetition loop, not a transcript
        rec.dropped = rec.dropped or f"repetitive transcript (ratio {ratio:.1f})"
    rec.text = text
    return rec


def _token_cap(teacher, audios) -> int:
    """The transcriber's loop guard for the teacher (its default 8 tokens per second of the longest clip)."""
    limit = teacher.config.max_target_positions // 2 - 4
    return token_cap(max(len(a) for a in audios), TranscriptionOptions.max_tokens_per_second, limit)
