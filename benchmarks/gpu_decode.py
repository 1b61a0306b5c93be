"""GPU decoding at the floor: the transformers loop against the static-cache CUDA-graph step, one run.

Random weights of the real shapes (tiny.en, base, small; the weights do not change the arithmetic), fp16,
a 30 s encoder window, exactly ``--tokens`` greedy tokens per clip (end-of-text is suppressed so every
clip decodes the same length on both paths). Batch 1 latency (encoder + decoding, median of ``--repeats``)
and batch-32 throughput, both paths in the same process, plus how many greedy tokens the two paths agree
on (fp16 reductions in another order may flip a near-tie on random weights; the CPU tests check exact
equality in fp32 on real weights).

    python benchmarks/gpu_decode.py --out benchmarks/results/gpu_decode_h100.md

Needs a CUDA GPU (benchmarks/gpu_check.sh runs it with the CUDA tests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mkdeploy.transcription.decoding import greedy_decode, torch_step  # noqa: E402
from mkdeploy.transcription.static_decoder import StaticGreedyDecoder  # noqa: E402

#: Whisper's published shapes (openai/whisper's ModelDimensions): d_model, heads, encoder/decoder layers, vocab
SHAPES = {
    "tiny.en": (384, 6, 4, 4, 51864),
    "base": (512, 8, 6, 6, 51865),
    "small": (768, 12, 12, 12, 51865),
}


def build(shape: str):
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    d, h, e, n, vocab = SHAPES[shape]
    cfg = WhisperConfig(vocab_size=vocab, d_model=d, encoder_attention_heads=h, decoder_attention_heads=h,
                        encoder_layers=e, decoder_layers=n, encoder_ffn_dim=4 * d, decoder_ffn_dim=4 * d)  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).to("cuda", torch.float16).eval()
    gen = GenerationConfig(eos_token_id=vocab - 1, suppress_tokens=[vocab - 1], begin_suppress_tokens=[220])
    return model, gen


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (allocations, graph capture)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_shape(shape: str, tokens: int, repeats: int) -> list[str]:
    model, gen = build(shape)
    prompt = [50257, 50362] if shape.endswith(".en") else [50258, 50259, 50359, 50363]
    static = StaticGreedyDecoder(model, gen, max_len=len(prompt) + tokens + 8)
    rows = []
    for batch in (1, 32):
        feats = torch.randn(batch, 80, 3000, device="cuda", dtype=torch.float16)

        def loop(feats=feats, batch=batch):
            with torch.inference_mode():
                states = model.get_encoder()(feats).last_hidden_state
                return greedy_decode(torch_step(model, states), batch, prompt, gen, tokens, gen.eos_token_id + 1)

        def graph(feats=feats):
            with torch.inference_mode():
                states = model.get_encoder()(feats).last_hidden_state
                return static.decode(states, prompt, tokens)

        def encoder(feats=feats):
            with torch.inference_mode():
                return model.get_encoder()(feats).last_hidden_state

        t_loop, a = timed(loop, repeats)
        t_graph, b = timed(graph, repeats)
        t_enc, _ = timed(encoder, repeats)
        same = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra.tokens, rb.tokens))  # type: ignore[union-attr]
        total = sum(len(r.tokens) for r in a)  # type: ignore[union-attr]
        rows.append(
            f"| {shape} | {batch} | {1000 * t_enc:.1f} | {1000 * t_loop:.1f} | {1000 * t_graph:.1f} "
            f"| {batch / t_loop:.0f} | {batch / t_graph:.0f} | {t_loop / t_graph:.1f}x | {same}/{total} |"
        )
        print(rows[-1], flush=True)
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="tiny.en,base,small")
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_decode.py: no CUDA GPU here")
    head = [
        f"# GPU decoding: transformers loop vs static-cache CUDA-graph step ({torch.cuda.get_device_name(0)})",
        "",
        f"`python benchmarks/gpu_decode.py` · fp16 · random weights of the real shapes · 30 s window · "
        f"{args.tokens} greedy tokens per clip · median of {args.repeats} · torch {torch.__version__}",
        "",
        "| shape | batch | encoder (ms) | loop (ms) | CUDA graph (ms) | loop clips/s | graph clips/s | speed-up "
        "| same tokens |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    print("\n".join(head), flush=True)
    rows = [r for s in args.shapes.split(",") for r in run_shape(s, args.tokens, args.repeats)]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(head + rows) + "\n")


if __name__ == "__main__":
    main()
