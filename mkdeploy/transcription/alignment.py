"""Word-level timestamps from cross-attention and dynamic time warping, openai/whisper's method (its
timing.py, ``find_alignment`` and ``add_word_timestamps``).

A decoder pass teacher-forced on the decoded tokens returns the cross-attention of every head; the
*alignment heads* (the generation config's ``alignment_heads``: the heads whose attention follows the
audio in time, found by the model's authors; for a distilled or pruned student chosen by measurement,
:func:`choose_alignment_heads`) are normalised per frame, median-filtered along time and averaged; DTW
through the negated matrix gives each token the encoder frame where it starts (20 ms per frame). Tokens
are grouped into words (a word starts at a token that begins with a space; punctuation joins the word before
it), a word's time is its first token's start to the next word's start, and its probability is the mean of
its tokens'.

PyTorch only: ONNX exports do not output attention weights, so an export is aligned with a PyTorch pass of
the model it was exported from (:meth:`mkdeploy.transcription.runtime.WhisperTranscriber.aligner`): one decoder pass
per clip, no change to the exported graphs (whisper.cpp and sherpa-onnx keep the attention inside their
own runtimes instead; an extra ONNX output would double the decoder graphs to maintain).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.results import Word
from mkdeploy.transcription.batching import WINDOW_SAMPLES, model_inputs
from mkdeploy.transcription.decoding import forced_ids

#: encoder frames per second (Whisper's 2x downsampled 100 Hz mel: 1500 frames per 30 s)
FRAMES_PER_SECOND = 50
#: openai/whisper's median filter width (timing.py, ``medfilt_width``)
MEDFILT_WIDTH = 7
#: punctuation merged into the word before it (openai/whisper's ``append_punctuations``, less the
#: opening quotes it prepends instead)
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@contextmanager
def eager_attention(model):
    """Hugging Face's SDPA and flash kernels return no attention weights: switch every config the model's
    modules read to the eager implementation for the duration."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    before = {k: getattr(c, "_attn_implementation", None) for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]


def median_filter(x: np.ndarray, width: int = MEDFILT_WIDTH) -> np.ndarray:
    """Median over the last axis in windows of ``width`` (odd), edges reflected (openai/whisper pads so)."""
    if width <= 1 or x.shape[-1] < width:
        return x
    pad = width // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment of rows (tokens) to columns (frames) at least cost (openai/whisper's ``dtw_cpu``
    with its tie order: diagonal, then up, then left).

    Returns:
        (token indices, frame indices) along the path, from (0, 0) to the last cell.
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row, prev = acc[i], acc[i - 1]
        for j in range(1, m + 1):
            c0, c1, c2 = prev[j - 1], prev[j], row[j - 1]
            if c0 <= c1 and c0 <= c2:
                best, t = c0, 0
            elif c1 <= c2:
                best, t = c1, 1
            else:
                best, t = c2, 2
            row[j] = cost[i - 1, j - 1] + best
            trace[i, j] = t
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        move = int(trace[i, j])
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    arr = np.array(path)
    return arr[:, 0], arr[:, 1]


def split_words(tokenizer, tokens: Sequence[int]) -> list[list[int]]:
    """Tokens grouped into words: a word starts at a token whose text begins with a space, punctuation
    joins the word before it (space-delimited languages; for Chinese, Japanese, Thai and the like, where
    openai/whisper splits on Unicode, each token stays a word here)."""
    words: list[list[int]] = []
    for t in tokens:
        text = tokenizer.decode([t])
        starts = text.startswith(" ") or not words
        if words and text.strip() and all(ch in APPEND_PUNCTUATION for ch in text.strip()):
            starts = False
        if starts:
            words.append([t])
        else:
            words[-1].append(t)
    return words


def cross_attention(model, states: torch.Tensor, ids: torch.Tensor, heads: Sequence[Sequence[int]]):
    """[B, heads, tokens, frames] cross-attention of ``heads`` (``[layer, head]``) and the logits, one
    teacher-forced pass of a PyTorch ``WhisperForConditionalGeneration``."""
    with torch.inference_mode(), eager_attention(model):
        out = model.model.decoder(input_ids=ids, encoder_hidden_states=states, output_attentions=True, use_cache=False)
        logits = model.proj_out(out.last_hidden_state)
    weights = torch.stack([out.cross_attentions[layer][:, head] for layer, head in heads], dim=1)
    return weights.float(), logits.float()


def align_words(
    model,
    tokenizer,
    states: torch.Tensor,
    prompt: Sequence[int],
    token_seqs: Sequence[Sequence[int]],
    durations: Sequence[float],
    heads: Sequence[Sequence[int]],
    eot: int,
    offset: Sequence[float] | None = None,
) -> list[list[Word]]:
    """Words with times for each clip of a batch.

    Args:
        model: a PyTorch Whisper (the decoder is run; ``states`` are its encoder's).
        tokenizer: its tokenizer.
        states: [B, frames, d] encoder states of the clips (30 s windows).
        prompt: the decoder's start tokens (``<|startoftranscript|>`` ... ``<|notimestamps|>``).
        token_seqs: each clip's text tokens (no special tokens).
        durations: each clip's seconds of audio (attention beyond it is padding and is cut).
        heads: ``[layer, head]`` alignment heads.
        eot: ``<|endoftext|>``.
        offset: seconds added to each clip's times (the window's start in a long file).

    Returns:
        One list of :class:`Word` per clip (empty for a clip with no tokens).
    """
    weights, logits = cross_attention(model, states, forced_ids(prompt, token_seqs, eot, states.device), heads)
    probs = torch.softmax(logits, dim=-1)
    out: list[list[Word]] = []
    p0 = len(prompt)
    for b, seq in enumerate(token_seqs):
        if not seq:
            out.append([])
            continue
        n_frames = max(1, min(weights.shape[-1], int(round(durations[b] * FRAMES_PER_SECOND))))
        # rows: the positions that *predict* each text token and the end of text (openai/whisper's
        # matrix[len(sot_sequence):-1] over the sequence sot + tokens + eot)
        w = weights[b, :, p0 - 1 : p0 + len(seq), :n_frames].cpu().numpy()
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-10)  # renormalised over the audio, as its softmax
        mean, std = w.mean(axis=-2, keepdims=True), w.std(axis=-2, keepdims=True)
        w = median_filter((w - mean) / np.maximum(std, 1e-10))
        matrix = w.mean(axis=0)
        text_idx, time_idx = dtw(-matrix.astype(np.float64))
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_times = time_idx[jumps] / FRAMES_PER_SECOND  # start of each token, then of the end of text
        token_p = probs[b, torch.arange(p0 - 1, p0 - 1 + len(seq)), torch.tensor(seq)].cpu().numpy()
        shift = offset[b] if offset is not None else 0.0
        words, k = [], 0
        for group in split_words(tokenizer, seq):
            start, end = jump_times[k], jump_times[min(k + len(group), len(jump_times) - 1)]
            words.append(
                Word(
                    word=tokenizer.decode(group),
                    start=round(float(start) + shift, 2),
                    end=round(float(max(end, start)) + shift, 2),
                    probability=round(float(np.mean(token_p[k : k + len(group)])), 4),
                )
            )
            k += len(group)
        out.append(clamp_long_words(words))
    return out


def clamp_long_words(words: list[Word]) -> list[Word]:
    """openai/whisper's fix for DTW's habit of stretching a word over a pause next to it (its
    ``add_word_timestamps``): longer than twice the median word (the median capped at 0.7 s), a word that
    ends a sentence ends that long after its start, and a first word or one after a sentence end starts
    that long before its end."""
    durations = [w.end - w.start for w in words if w.end > w.start]
    if not durations:
        return words
    max_duration = 2 * min(0.7, float(np.median(durations)))
    ends = (".", "!", "?", "。", "！", "？")
    for i, w in enumerate(words):
        if w.end - w.start <= max_duration:
            continue
        if w.word.rstrip().endswith(ends):
            w.end = round(w.start + max_duration, 2)
        elif i == 0 or words[i - 1].word.rstrip().endswith(ends):
            w.start = round(max(0.0, w.end - max_duration), 2)
    return words


#: a pause is a stretch of at least this long whose 20 ms frames are all quiet (shorter quiet runs are
#: stop closures and the gaps between words, where DTW's times are already as good as the frame)
MIN_PAUSE_S = 0.2
#: a word placed after the speech that follows a pause takes at most this much of it back
MAX_BACKFILL_S = 0.4
#: a frame is quiet below this share of the way from the clip's noise floor to its speech level (in dB)
QUIET_SHARE = 0.3


def pause_frames(audio: np.ndarray) -> np.ndarray:
    """Which encoder frames (20 ms) of ``audio`` lie in a pause: a run of quiet frames at least
    :data:`MIN_PAUSE_S` long. Quiet is relative to the clip, between its floor (the 10th percentile of the
    frame levels) and its speech (the 95th), so 20 dB of background noise is still a pause; a clip without
    that contrast (under 10 dB: speech throughout, or noise throughout) has no pauses."""
    hop = SAMPLE_RATE // FRAMES_PER_SECOND
    n = len(audio) // hop
    if n == 0:
        return np.zeros(0, bool)
    level = 10 * np.log10(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-10)
    floor, speech = np.percentile(level, 10), np.percentile(level, 95)
    if speech - floor < 10:
        return np.zeros(n, bool)
    quiet = level < floor + QUIET_SHARE * (speech - floor)
    out = np.zeros(n, bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a >= MIN_PAUSE_S * FRAMES_PER_SECOND:
            out[a:b] = True
    return out


def snap_to_speech(words: list[Word], audio: np.ndarray, offset: float = 0.0) -> list[Word]:
    """Move word edges that DTW placed inside a pause to where the speech is (in place).

    Cross-attention runs ahead of the audio at a pause: the first word after one is placed up to 0.4-0.7 s
    early on base (benchmarks/results/word_onsets.md). A start inside a pause moves to the pause's end, an
    end inside one to its start, as long as the word keeps some length; a word wholly inside a pause is
    left as it is (nothing says where it belongs). A start placed late, after speech that follows a pause
    and that no earlier word covers, moves back to the pause's end (up to :data:`MAX_BACKFILL_S`). stable-ts's ``suppress_silence``
    (https://github.com/jianfch/stable-ts) does the same from the waveform's loudness.

    Args:
        words: the words of ``audio``, times in seconds from ``offset``.
        audio: the 16 kHz samples the words were aligned on.
        offset: seconds of the file before ``audio`` starts (a long file's window).
    """
    pause = pause_frames(audio)
    if not pause.any():
        return words
    fps = FRAMES_PER_SECOND
    # run boundaries: for each frame the first frame after its pause, and the first frame of its pause
    n = len(pause)
    after = np.arange(n + 1)
    for i in range(n - 1, -1, -1):
        after[i] = after[i + 1] if pause[i] else i
    before = np.arange(n)
    for i in range(1, n):
        before[i] = before[i - 1] if pause[i] and pause[i - 1] else i
    last_pause = np.where(pause, np.arange(n), -1)
    last_pause = np.maximum.accumulate(last_pause)  # for each frame, the latest pause frame at or before it
    prev_end = offset
    for w in words:
        s, e = int((w.start - offset) * fps), int(np.ceil((w.end - offset) * fps)) - 1
        if 0 <= s < n and pause[s] and after[s] < e:
            w.start = round(offset + after[s] / fps, 2)
        elif 0 < s < n and not pause[s]:
            # starting late: speech since a pause that no word covers is this word's beginning
            j = last_pause[s - 1]
            if j >= 0 and offset + (j + 1) / fps >= prev_end and s - (j + 1) <= MAX_BACKFILL_S * fps:
                w.start = round(offset + (j + 1) / fps, 2)
        if 0 <= e < n and pause[e] and before[e] / fps + offset > w.start:
            w.end = round(offset + before[e] / fps, 2)
        prev_end = w.end
    return words


def choose_alignment_heads(
    model, tokenizer, states: torch.Tensor, prompt: Sequence[int], token_seqs: Sequence[Sequence[int]],
    durations: Sequence[float], eot: int, top: int = 8,
) -> list[list[int]]:  # fmt: skip
    """The heads whose cross-attention best follows time, for a model whose own are unknown (a distilled
    or pruned student): per head, the Spearman-like correlation between token position and its attention's
    peak frame over the given clips, highest first.

    Args:
        top: how many heads to return.

    Returns:
        ``[[layer, head], ...]``, best first.
    """
    cfg = model.config
    every = [[layer, head] for layer in range(cfg.decoder_layers) for head in range(cfg.decoder_attention_heads)]
    weights, _ = cross_attention(model, states, forced_ids(prompt, token_seqs, eot, states.device), every)
    p0 = len(prompt)
    score = np.zeros(len(every))
    for b, seq in enumerate(token_seqs):
        if len(seq) < 3:
            continue
        n_frames = max(1, int(round(durations[b] * FRAMES_PER_SECOND)))
        peaks = weights[b, :, p0 : p0 + len(seq), :n_frames].argmax(-1).cpu().numpy()  # [heads, tokens]
        pos = np.arange(len(seq))
        for h in range(len(every)):
            if np.std(peaks[h]) > 0:
                score[h] += np.corrcoef(pos, peaks[h])[0, 1] * len(seq)
    order = np.argsort(-score)[:top]
    return [every[int(i)] for i in order]


def model_alignment_heads(model) -> list[list[int]] | None:
    """The generation config's ``alignment_heads`` when every one exists in this model, else None (a pruned
    student keeps its teacher's list, which may name layers it no longer has)."""
    heads = getattr(model.generation_config, "alignment_heads", None)
    cfg = model.config
    if not heads or any(
        not (0 <= layer < cfg.decoder_layers and 0 <= h < cfg.decoder_attention_heads) for layer, h in heads
    ):
        return None
    return [list(map(int, x)) for x in heads]


def add_words(engine, aligner, audios: Sequence[np.ndarray], results, options, states=None) -> None:
    """Fill ``words`` of each result and of its segments (in place).

    Args:
        engine: the :class:`~mkdeploy.transcription.engine.Engine` that decoded (its tokenizer and decoder prompt).
        aligner: a PyTorch Whisper with the same weights (the engine's own model on PyTorch).
        audios: the batch's audio.
        results: its :class:`~mkdeploy.results.Transcription` objects.
        options: the decoding options (language, task: the decoder prompt).
        states: the aligner's encoder states of the batch when already computed (clips of at most 30 s).
    """
    tok = engine.processor.tokenizer
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    prompt = engine.prompt(options)
    jobs: list[tuple[int, np.ndarray, list[int], float]] = []  # (result, audio window, tokens, offset)
    for i, (audio, r) in enumerate(zip(audios, results)):
        if not r.tokens:
            continue
        if len(audio) <= WINDOW_SAMPLES:
            jobs.append((i, audio, r.tokens, 0.0))
            continue
        # long-form: consecutive segments that fit one 30 s window from the first one's start are aligned
        # together on that window (openai/whisper aligns window by window too)
        group: list = []
        for seg in r.segments + [None]:
            if group and (seg is None or seg.end - group[0].start > WINDOW_SAMPLES / SAMPLE_RATE):
                start = int(group[0].start * SAMPLE_RATE)
                tokens = [t for s in group for t in s.tokens]
                jobs.append((i, audio[start : start + WINDOW_SAMPLES], tokens, group[0].start))
                group = []
            if seg is not None:
                group.append(seg)
    if not jobs:
        return
    words_of: dict[int, list] = {}
    short = states is not None and all(len(a) <= WINDOW_SAMPLES for a in audios)
    heads = model_alignment_heads(aligner)
    for start in range(0, len(jobs), max(1, options.batch_size)):
        chunk = jobs[start : start + max(1, options.batch_size)]
        if short:
            st = states[[i for i, *_ in chunk]]
        else:
            feats = model_inputs(engine, [a for _, a, _, _ in chunk]).features.to(aligner.device, aligner.dtype)
            with torch.inference_mode():
                st = aligner.get_encoder()(feats).last_hidden_state
        seqs = [t for _, _, t, _ in chunk]
        durs = [len(a) / SAMPLE_RATE for _, a, _, _ in chunk]
        use = heads or choose_alignment_heads(aligner, tok, st, prompt, seqs, durs, eot)
        found = align_words(aligner, tok, st, prompt, seqs, durs, use, eot, offset=[o for *_, o in chunk])
        for (i, audio, _, shift), ws in zip(chunk, found):
            words_of.setdefault(i, []).extend(snap_to_speech(ws, audio, shift))
    for i, words in words_of.items():
        r = results[i]
        # windows of a long file overlap where a segment straddles their join: a word never starts
        # before the one before it ends
        for a, b in zip(words, words[1:]):
            if b.start < a.end:
                b.start = a.end
                b.end = max(b.end, b.start)
        r.words = words
        if not r.segments:
            continue
        # each word goes to the segment it overlaps most (nearest when none): Whisper's segment times are
        # coarse (its timestamp tokens), so a word may stick out of its segment a little
        for w in words:
            seg = max(r.segments, key=lambda s: (min(s.end, w.end) - max(s.start, w.start), -abs(s.start - w.start)))
            seg.words.append(w)
