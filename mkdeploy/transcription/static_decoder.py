"""Greedy Whisper decoding with static KV buffers, one decoder step that a CUDA graph can capture.

A decoder step of tiny.en on a GPU is a few dozen small kernels; the transformers loop launches them
from Python with a growing cache, so a 30-token clip costs ~100 ms of launches for ~5 ms of arithmetic
(issue 17's table: 83 ms per clip against 14.5 ms with the step captured as a CUDA graph). What a graph
needs is what this module gives the step:

- **fixed shapes**: self-attention keys and values live in buffers sized ``[layers, batch, heads, max_len,
  head_dim]`` and each step writes one position (``index_copy_`` at a position held in a tensor, not a
  Python int); attention reads the whole buffer under a mask of the positions written so far;
- **cross-attention keys and values computed once per clip** from the encoder states (the transformers
  loop caches them too, but in a dynamic cache object);
- **greedy selection inside the step**: ``suppress_tokens`` (and ``begin_suppress_tokens`` at the first
  generated position) as an additive mask, argmax, end-of-text latching and the position advance are
  tensor operations, so a replay needs no host round trip; the host checks for "all finished" every
  ``sync_every`` tokens only.

On CUDA, :class:`StaticGreedyDecoder` captures the step once per (batch bucket, encoder length) and replays
it; elsewhere (or if capture fails, logged once) it runs the same step eagerly, which is how the CPU tests
check it token for token against the transformers loop (tests/test_static_decoder.py). The computation
follows ``WhisperDecoderLayer`` in transformers' modeling_whisper.py (pre-norm self-attention, cross-
attention, GELU MLP; queries scaled by ``head_dim ** -0.5``, the default of
``torch.nn.functional.scaled_dot_product_attention``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mkdeploy.transcription.decoding import GreedyResult, greedy_results

log = logging.getLogger(__name__)

#: batch sizes a graph is captured for; a batch is padded up to the next one
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def batch_bucket(n: int) -> int:
    """The smallest captured batch size that holds ``n`` clips (``n`` itself above the largest)."""
    return next((b for b in BATCH_BUCKETS if b >= n), n)


@dataclass
class _Buffers:
    """Everything a captured step reads and writes; its tensors never move or change shape."""

    self_k: torch.Tensor  # [L, B, H, T, Dh]
    self_v: torch.Tensor
    cross_k: torch.Tensor  # [L, B, H, S, Dh]
    cross_v: torch.Tensor
    ids: torch.Tensor  # [B] the token fed at this step
    pos: torch.Tensor  # [] the position it sits at
    first: torch.Tensor  # [] the position of the first generated token (begin_suppress_tokens apply there)
    done: torch.Tensor  # [B] end-of-text already produced
    out: torch.Tensor  # [B, T] tokens chosen, by position


class StaticGreedyDecoder:
    """Greedy, timestamp-free decoding of a ``WhisperForConditionalGeneration`` over fixed encoder states.

    Args:
        model: the PyTorch Whisper model (merged or with LoRA layers; they are called as modules).
        generation_config: supplies ``suppress_tokens``, ``begin_suppress_tokens`` and ``eos_token_id``.
        max_len: positions in the self-attention buffers (prompt plus generated tokens); at most the
            model's ``max_target_positions``.
        cuda_graphs: capture the step as a CUDA graph when the model is on CUDA (False: always eager).
        sync_every: tokens between host checks of "every clip finished" (graph mode).
    """

    def __init__(
        self, model, generation_config, max_len: int | None = None, cuda_graphs: bool = True, sync_every: int = 8
    ):
        self.model = model
        dec = model.model.decoder
        self.dec = dec
        cfg = model.config
        self.heads = cfg.decoder_attention_heads
        self.head_dim = cfg.d_model // self.heads
        self.max_len = min(max_len or cfg.max_target_positions, cfg.max_target_positions)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        eos = generation_config.eos_token_id
        self.eos = int(eos[0] if isinstance(eos, (list, tuple)) else eos)
        vocab = cfg.vocab_size
        self.suppress = torch.zeros(vocab, device=self.device)
        self.suppress[list(generation_config.suppress_tokens or [])] = -math.inf
        self.begin = torch.zeros(vocab, device=self.device)
        self.begin[list(generation_config.begin_suppress_tokens or [])] = -math.inf
        self.no_mask = torch.zeros(vocab, device=self.device)
        self.positions = torch.arange(self.max_len, device=self.device)
        self.vocab_size = vocab
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self.sync_every = sync_every
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, _Buffers]] = {}
        self._graph_failed = False

    # -- the step ---------------------------------------------------------------------------------
    def _attend(self, attn, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
        b = x.shape[0]
        q = attn.q_proj(x).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn.out_proj(o.transpose(1, 2).reshape(b, 1, -1))

    def _step(self, buf: _Buffers) -> None:
        """One token for every clip: embed ``buf.ids`` at ``buf.pos``, run the layers, pick the next token
        into ``buf.ids`` and ``buf.out``, advance ``buf.pos``. Only tensor operations (graph-safe)."""
        b = buf.ids.shape[0]
        x = self.dec.embed_tokens(buf.ids[:, None]) + self.dec.embed_positions.weight.index_select(0, buf.pos.view(1))
        # positions written so far (this one included) are visible
        mask = (self.positions <= buf.pos).view(1, 1, 1, -1)
        for i, layer in enumerate(self.dec.layers):
            h = layer.self_attn_layer_norm(x)
            sa = layer.self_attn
            k = sa.k_proj(h).view(b, self.heads, self.head_dim)
            v = sa.v_proj(h).view(b, self.heads, self.head_dim)
            buf.self_k[i].index_copy_(2, buf.pos.view(1), k[:, :, None])
            buf.self_v[i].index_copy_(2, buf.pos.view(1), v[:, :, None])
            x = x + self._attend(sa, h, buf.self_k[i], buf.self_v[i], mask)
            h = layer.encoder_attn_layer_norm(x)
            x = x + self._attend(layer.encoder_attn, h, buf.cross_k[i], buf.cross_v[i], None)
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        logits = self.model.proj_out(self.dec.layer_norm(x))[:, 0].float()
        # torch.where, not a product: -inf * 0 is nan
        logits = logits + self.suppress + torch.where(buf.pos == buf.first, self.begin, self.no_mask)
        nxt = logits.argmax(-1)
        nxt = torch.where(buf.done, torch.full_like(nxt, self.eos), nxt)
        buf.done |= nxt == self.eos
        buf.out.index_copy_(1, buf.pos.view(1), nxt[:, None])
        buf.ids.copy_(nxt)
        buf.pos += 1

    # -- buffers and graphs -----------------------------------------------------------------------
    def _buffers(self, batch: int, enc_len: int) -> _Buffers:
        n, d = len(self.dec.layers), self.head_dim

        def z(*shape, dtype=None):
            return torch.zeros(*shape, device=self.device, dtype=dtype or self.dtype)

        return _Buffers(
            self_k=z(n, batch, self.heads, self.max_len, d),
            self_v=z(n, batch, self.heads, self.max_len, d),
            cross_k=z(n, batch, self.heads, enc_len, d),
            cross_v=z(n, batch, self.heads, enc_len, d),
            ids=z(batch, dtype=torch.long),
            pos=z((), dtype=torch.long),
            first=z((), dtype=torch.long),
            done=z(batch, dtype=torch.bool),
            out=z(batch, self.max_len, dtype=torch.long),
        )

    def _fill_cross(self, buf: _Buffers, states: torch.Tensor) -> None:
        b, s, _ = states.shape
        for i, layer in enumerate(self.dec.layers):
            ca = layer.encoder_attn
            buf.cross_k[i, :b].copy_(ca.k_proj(states).view(b, s, self.heads, self.head_dim).transpose(1, 2))
            buf.cross_v[i, :b].copy_(ca.v_proj(states).view(b, s, self.heads, self.head_dim).transpose(1, 2))

    def _graph_for(self, batch: int, enc_len: int):
        """(graph, buffers) for this shape, captured on first use; None where capture is not possible."""
        key = (batch, enc_len)
        if key in self._graphs:
            return self._graphs[key]
        buf = self._buffers(batch, enc_len)
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside the graph (cuBLAS handles, lazy inits)
                for _ in range(2):
                    self._step(buf)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._step(buf)
        except Exception as exc:  # capture is refused by some ops, allocators and drivers
            if not self._graph_failed:
                log.warning("CUDA graph capture failed (%s); decoding with the plain step", str(exc).splitlines()[0])
            self._graph_failed, self.use_graphs = True, False
            return None
        self._graphs[key] = (graph, buf)
        return graph, buf

    # -- decoding ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(
        self,
        encoder_states: torch.Tensor,
        prompt: Sequence[int],
        max_new_tokens: int,
        compression_ratio_threshold: float | None = None,
    ) -> list[GreedyResult]:
        """Greedy tokens for each clip of ``encoder_states`` ([batch, frames, d_model]).

        Args:
            encoder_states: the encoder's output for the clips.
            prompt: the decoder prompt (:func:`mkdeploy.transcription.decoding.decoder_prompt`).
            max_new_tokens: cap on generated tokens per clip, end-of-text included (as ``generate``).
            compression_ratio_threshold: flag outputs above it for the temperature fallback.

        Returns:
            one :class:`~mkdeploy.transcription.decoding.GreedyResult` per clip, the same as
            :func:`mkdeploy.transcription.decoding.greedy_decode` gives with the transformers step.
        """
        n, enc_len = encoder_states.shape[0], encoder_states.shape[1]
        p = len(prompt)
        steps = min(max_new_tokens, self.max_len - p + 1)
        batch = batch_bucket(n) if self.use_graphs else n
        graph = self._graph_for(batch, enc_len) if self.use_graphs else None
        buf = graph[1] if graph else self._buffers(batch, enc_len)
        states = encoder_states.to(self.dtype)
        if batch > n:  # pad the batch with copies of the first clip; their tokens are dropped
            states = torch.cat([states, states[:1].expand(batch - n, -1, -1)])
        self._fill_cross(buf, states)
        buf.self_k.zero_()
        buf.self_v.zero_()
        # in the buffers, not a fresh tensor: a captured graph reads the memory it saw at capture
        buf.first.fill_(p - 1)
        # the prompt, one position at a time through the same step (its picks are overwritten)
        for i, t in enumerate(prompt):
            buf.ids.fill_(t)
            buf.pos.fill_(i)
            if i < p - 1:
                self._step(buf)
        buf.done.zero_()  # a prompt step may have "picked" end-of-text
        i = -1
        for i in range(steps):
            if graph:
                graph[0].replay()
            else:
                self._step(buf)
            if (not graph or (i + 1) % self.sync_every == 0) and bool(buf.done[:n].all()):
                break
        out = buf.out[:n, p - 1 : p - 1 + i + 1].tolist()
        return greedy_results(out, self.eos, self.vocab_size, compression_ratio_threshold)
