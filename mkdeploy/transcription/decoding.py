"""The PyTorch and optimum side of decoding: the decoder prompt, ``generate``'s yield point, and the step and
logits functions that feed the one decoding core (:mod:`mkdeploy.lean.greedy`) numpy logits.

The loops, the timestamp rules, the no-speech score and the step hooks live in :mod:`mkdeploy.lean.greedy`, which
imports no torch, so the ONNX Runtime engine of :mod:`mkdeploy.lean` runs exactly the same rules; this module
re-exports them for the callers that drive a PyTorch or optimum model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mkdeploy.lean.greedy import (
    DecodeCancelled,
    GreedyResult,
    LogitsFn,
    SpeechScore,
    StepFn,
    between_steps,
    compression_ratio,
    greedy_decode,
    greedy_decode_timestamps,
    greedy_results,
    score_speech,
    step_boundary,
    text_compression_ratio,
    token_cap,
    yielding,
)
from mkdeploy.lean.greedy import forced_ids as forced_id_rows

__all__ = [
    "DecodeCancelled",
    "GreedyResult",
    "LogitsFn",
    "SpeechScore",
    "StepBoundary",
    "StepFn",
    "between_steps",
    "compression_ratio",
    "decoder_prompt",
    "forced_ids",
    "greedy_decode",
    "greedy_decode_timestamps",
    "greedy_results",
    "no_speech_token",
    "ort_logits",
    "ort_step",
    "score_speech",
    "step_boundary",
    "text_compression_ratio",
    "token_cap",
    "torch_logits",
    "torch_step",
    "yielding",
]


class StepBoundary:
    """A logits processor for ``generate`` that calls :func:`step_boundary` at each of its steps and leaves
    the scores as they are, so beam search, timestamps and the temperature fallback yield too."""

    def __call__(self, input_ids, scores):
        step_boundary()
        return scores


def decoder_prompt(tokenizer, generation_config, language: str | None = "en", task: str = "transcribe") -> list[int]:
    """<|startoftranscript|> [<|lang|> <|task|>] <|notimestamps|>, as ``generate`` builds it."""
    ids = [tokenizer.convert_tokens_to_ids("<|startoftranscript|>")]
    if getattr(generation_config, "is_multilingual", False) and getattr(generation_config, "lang_to_id", None):
        ids += [generation_config.lang_to_id[f"<|{language or 'en'}|>"], tokenizer.convert_tokens_to_ids(f"<|{task}|>")]
    ids.append(tokenizer.convert_tokens_to_ids("<|notimestamps|>"))
    return ids


def no_speech_token(tokenizer, generation_config) -> int:
    """``<|nocaptions|>`` (``<|nospeech|>`` in large-v3): the id just below ``<|notimestamps|>``, as
    transformers' ``WhisperNoSpeechDetection`` takes it."""
    for name in ("<|nospeech|>", "<|nocaptions|>"):
        tid = tokenizer.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            return tid
    return int(generation_config.no_timestamps_token_id) - 1


def forced_ids(
    prompt: Sequence[int], sequences: Sequence[Sequence[int]], eot: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """:func:`mkdeploy.lean.greedy.forced_ids` as a tensor on ``device`` (the PyTorch alignment pass)."""
    return torch.from_numpy(forced_id_rows(prompt, sequences, eot)).to(device)


def _numpy(logits: torch.Tensor) -> np.ndarray:
    return logits.detach().float().cpu().numpy()


def _ids(ids: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(device)


def torch_logits(model, encoder_hidden_states: torch.Tensor) -> LogitsFn:
    """Full-sequence logits from a PyTorch ``WhisperForConditionalGeneration`` over fixed encoder states."""
    from transformers.modeling_outputs import BaseModelOutput  # heavy; imported on use so the core import stays light

    enc = BaseModelOutput(last_hidden_state=encoder_hidden_states)  # type: ignore[arg-type]
    dev = encoder_hidden_states.device
    return lambda ids: _numpy(model(encoder_outputs=enc, decoder_input_ids=_ids(ids, dev), use_cache=False).logits)


def ort_logits(model, encoder_hidden_states: torch.Tensor) -> LogitsFn:
    """Full-sequence logits from optimum's ONNX decoder (its no-cache branch)."""
    dev = encoder_hidden_states.device
    return lambda ids: _numpy(
        model.decoder(input_ids=_ids(ids, dev), encoder_hidden_states=encoder_hidden_states).logits
    )


def torch_step(model, encoder_hidden_states: torch.Tensor) -> StepFn:
    """A step function over a PyTorch ``WhisperForConditionalGeneration`` and fixed encoder states."""
    from transformers.modeling_outputs import BaseModelOutput  # heavy; imported on use so the core import stays light

    enc = BaseModelOutput(last_hidden_state=encoder_hidden_states)  # type: ignore[arg-type]
    dev = encoder_hidden_states.device

    def step(ids, past):
        with torch.inference_mode():
            out = model(encoder_outputs=enc, decoder_input_ids=_ids(ids, dev), past_key_values=past, use_cache=True)
        return _numpy(out.logits), out.past_key_values

    return step


def ort_step(model, encoder_hidden_states: torch.Tensor) -> StepFn:
    """A step function over optimum's ONNX decoder (merged graph: cache branch after the first call)."""
    dev = encoder_hidden_states.device

    def step(ids, past):
        out = model.decoder(
            input_ids=_ids(ids, dev), encoder_hidden_states=encoder_hidden_states, past_key_values=past, use_cache=True
        )
        return _numpy(out.logits), out.past_key_values

    return step
