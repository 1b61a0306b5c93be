"""Teacher-forcing one transcript through two tokenizers and pairing their decoder positions (README, The recipe in a paragraph).

A multilingual teacher and an English-only student (base → tiny.en) tokenize the same text differently.
The decoder state at a position has read a prefix of the text; two positions pair when their prefixes end
at the same character offset, so both next-token distributions are conditioned on the same text. There the
logit term runs over the shared vocabulary (token strings present in both), renormalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mkdeploy.constants import CHUNK_S, TIME_PRECISION_S
from mkdeploy.transcription.decoding import decoder_prompt


@dataclass
class ForcedSequence:
    """One model's teacher-forced view of a transcript.

    Attributes:
        input_ids: prompt + text tokens (the decoder input).
        labels: next-token targets, -100 over the prompt (the last prompt position predicts the first text
            token; the last position predicts end-of-text).
        prefix_end: for each position, the character offset where the text it has read ends (None before
            the last prompt token: those positions have read no text and predict prompt tokens).
    """

    input_ids: list[int]
    labels: list[int]
    prefix_end: list[int | None]


def prompt_ids(tokenizer, generation_config, language: str = "en") -> list[int]:
    """<|startoftranscript|> [<|lang|> <|transcribe|>] <|notimestamps|>, as generate() builds it."""

    return decoder_prompt(tokenizer, generation_config, language)


def force(tokenizer, prompt: list[int], text: str, max_len: int = 440) -> ForcedSequence:
    """Tokenize ``text`` (with Whisper's leading space) after ``prompt``."""
    text = " " + text.strip()
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])[: max_len - len(prompt)]
    ends = [e for _, e in enc["offset_mapping"]][: len(ids)]
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    input_ids = prompt + ids
    labels = [-100] * (len(prompt) - 1) + ids + [eot]
    prefix_end: list[int | None] = [None] * (len(prompt) - 1) + [0] + ends
    return ForcedSequence(input_ids, labels, prefix_end)


def force_segments(
    tokenizer, prompt: list[int], segments: list[tuple[float, float, str]], max_len: int = 440
) -> ForcedSequence:
    """Timed segments, ``<|s1|> text1 <|e1|> <|s2|> text2 <|e2|> ...``, after a prompt without
    ``<|notimestamps|>``.

    Whisper decodes audio over 30 s in timestamp mode (it seeks on the last timestamp); a student trained
    only on ``<|notimestamps|>`` sequences drifts from it (measured: 12.65% WER on 45-60 s recordings where
    tiny.en is at 9.37%; the 30 s-window demo student 36.7%). Teaching a whole clip as one segment made it
    worse (49.0%: the student learned to stop after one segment of a full window), so the segments are the
    teacher's own (distil-whisper trains on timestamped pseudo-labels the same way). Times are put on
    Whisper's 20 ms grid, within 0-30 s. No position of such a sequence pairs with the teacher's: it trains
    with cross-entropy (and the encoder alignment) only.
    """

    def stamp(t: float) -> int:
        step = round(min(CHUNK_S, max(0.0, t)) / TIME_PRECISION_S)
        return tokenizer.convert_tokens_to_ids(f"<|{step * TIME_PRECISION_S:.2f}|>")

    ids: list[int] = []
    for start, end, text in segments:
        body = force(tokenizer, [], text, max_len).input_ids
        if len(prompt) + len(ids) + len(body) + 3 > max_len:
            break
        ids += [stamp(start)] + body + [stamp(end)]
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return ForcedSequence(prompt + ids, [-100] * (len(prompt) - 1) + ids + [eot], [None] * (len(prompt) + len(ids)))


def pair_positions(student: ForcedSequence, teacher: ForcedSequence) -> tuple[list[int], list[int]]:
    """Positions (student, teacher) whose read prefixes end at the same character offset.

    When one tokenization has several positions with the same end (a character split over byte tokens)
    the last one pairs: it has read the whole character.
    """

    def last_by_end(seq: ForcedSequence) -> dict[int, int]:
        out: dict[int, int] = {}
        for pos, end in enumerate(seq.prefix_end):
            if end is not None:
                out[end] = pos
        return out

    s, t = last_by_end(student), last_by_end(teacher)
    common = sorted(set(s) & set(t))
    return [s[e] for e in common], [t[e] for e in common]


@dataclass
class SharedVocab:
    """Token ids of identical token strings in both vocabularies, in the same order."""

    student_ids: torch.Tensor
    teacher_ids: torch.Tensor
    identical: bool  # the two tokenizers are the same: everything pairs, the full vocabulary is used

    def __len__(self) -> int:
        return len(self.student_ids)


def shared_vocab(student_tok, teacher_tok) -> SharedVocab:
    """Match the vocabularies by token string (byte-level BPE strings, special tokens included)."""
    sv, tv = student_tok.get_vocab(), teacher_tok.get_vocab()
    if sv == tv:
        ids = torch.arange(len(sv))
        return SharedVocab(ids, ids, True)
    common = sorted(set(sv) & set(tv), key=lambda k: sv[k])
    return SharedVocab(torch.tensor([sv[k] for k in common]), torch.tensor([tv[k] for k in common]), False)
