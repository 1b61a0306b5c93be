"""Where a CPU clip's time goes: ONNX Runtime int8 (through mkdeploy's runtime) against CTranslate2 int8 on
the same model, at equal threads.

For each engine: the encoder alone (30 s window), the whole clip (encoder + greedy decoding, as `mkd bench`
times it), hence the decoding time and the time per generated token; for ONNX Runtime also the merged
decoder's session alone on the same inputs (``session.run`` with numpy, no Python wrapper), so the wrapper's
share of a step shows.

The second table times the greedy loop itself (the encoder's states given) through optimum's decoder
wrapper and through mkdeploy's raw-session step (:class:`mkdeploy.lean.sessions.DecoderStep`): per decoder
step, the loop's time, the time inside the session's run calls, and what is left outside them.

    python benchmarks/cpu_profile.py ONNX_INT8_DIR CT2_DIR MANIFEST --threads 2 --limit 12 \\
        --out benchmarks/results/cpu_profile_tiny.en.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mkdeploy.audio import load_audio  # noqa: E402
from mkdeploy.bench import ModelSpec, load_runner  # noqa: E402
from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.data import load_manifest  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_ort(path: Path, audios, threads: int, repeats: int) -> dict:
    import torch

    run = load_runner(ModelSpec("ort", path), "cpu", "en", threads=threads)
    tr = run.tr
    fe = tr.processor.feature_extractor
    enc_s, clip_s, tokens, step_raw = [], [], [], []
    for a in audios:
        feats = torch.from_numpy(fe([a], sampling_rate=SAMPLE_RATE, return_tensors="np").input_features)
        enc_s.append(median_time(lambda feats=feats: tr.encode(feats), repeats))
        clip_s.append(median_time(lambda a=a: run.transcribe(a), repeats))
        tokens.append(run.transcribe(a)[1])
    # one decoder step on the raw session: the first cache-branch call after the prompt
    sess = tr.model.decoder.session
    states = tr.encode(torch.from_numpy(fe([audios[0]], sampling_rate=SAMPLE_RATE, return_tensors="np").input_features))
    h = states.last_hidden_state.numpy()
    names = [i.name for i in sess.get_inputs()]
    first = {"input_ids": np.array([[50257, 50362]], dtype=np.int64), "encoder_hidden_states": h,
             "use_cache_branch": np.array([False])}  # fmt: skip
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    for n in names:
        if n.startswith("past_key_values"):
            heads, dim = shapes[n][1], shapes[n][3]
            first[n] = np.zeros((1, heads, 0, dim), dtype=np.float32)
    outs = sess.run(None, first)
    out_names = [o.name for o in sess.get_outputs()]
    step = {"input_ids": np.array([[220]], dtype=np.int64), "encoder_hidden_states": h,
            "use_cache_branch": np.array([True])}  # fmt: skip
    for n, v in zip(out_names, outs):
        if n.startswith("present"):
            step[n.replace("present", "past_key_values")] = v
    step_raw.append(median_time(lambda: sess.run(None, step), max(20, repeats)))
    return summarise(enc_s, clip_s, tokens) | {"raw_step_ms": 1000 * step_raw[0]}


def profile_loop(path: Path, audios, threads: int, repeats: int) -> dict[str, dict]:
    """Per decoder step: the greedy loop's time, the time inside the decoder session's run calls, and the
    difference (what the Python side costs), through optimum's wrapper and through the raw-session step."""
    import torch

    from mkdeploy.options import TranscriptionOptions
    from mkdeploy.transcription.decoding import greedy_decode, no_speech_token

    engine = load_runner(ModelSpec("ort", path), "cpu", "en", threads=threads).tr.engine
    fe, gen = engine.processor.feature_extractor, engine.model.generation_config
    prompt = engine.prompt(TranscriptionOptions(language="en"))
    no_speech = no_speech_token(engine.processor.tokenizer, gen)
    session = engine.model.decoder.session
    inside = [0.0]
    for name in ("run", "run_with_iobinding", "run_with_ort_values"):  # the session's three ways in
        original = getattr(session, name)

        def timed(*a, _original=original, **kw):
            t0 = time.perf_counter()
            try:
                return _original(*a, **kw)
            finally:
                inside[0] += time.perf_counter() - t0

        setattr(session, name, timed)
    states = [
        engine.encode(
            torch.from_numpy(fe([a], sampling_rate=SAMPLE_RATE, return_tensors="np").input_features)
        ).last_hidden_state
        for a in audios
    ]
    out = {}
    for label, lean in (("optimum wrapper", False), ("raw session (DecoderStep)", True)):
        engine.lean_onnx_decoder = lean
        loop_s, steps, tokens = 0.0, 0, []
        inside[0] = 0.0
        for h in states:
            for _ in range(repeats):
                step, calls = engine.decoder_step(h), [0]

                def counted(ids, past, _step=step, _calls=calls):
                    _calls[0] += 1
                    return _step(ids, past)

                t0 = time.perf_counter()
                with torch.inference_mode():
                    [r] = greedy_decode(counted, 1, prompt, gen, 128, engine.model.config.vocab_size, 2.4,
                                        no_speech_id=no_speech)  # fmt: skip
                loop_s += time.perf_counter() - t0
                steps += calls[0]
            tokens.append(r.tokens)
        out[label] = {
            "steps": steps / repeats,
            "loop_ms": 1000 * loop_s / steps,
            "session_ms": 1000 * inside[0] / steps,
            "outside_ms": 1000 * (loop_s - inside[0]) / steps,
            "tokens": tokens,
        }
    return out


def profile_ct2(path: Path, audios, threads: int, repeats: int) -> dict:
    run = load_runner(ModelSpec("ct2", path, compute_type="int8"), "cpu", "en", threads=threads)
    enc_s, clip_s, tokens = [], [], []
    for a in audios:
        feats = run.features([a])
        sv = run.ct2.StorageView.from_array(np.ascontiguousarray(feats))
        enc_s.append(median_time(lambda sv=sv: run.model.encode(sv, to_cpu=True), repeats))
        clip_s.append(median_time(lambda a=a: run.transcribe(a), repeats))
        tokens.append(run.transcribe(a)[1])
    return summarise(enc_s, clip_s, tokens)


def summarise(enc_s, clip_s, tokens) -> dict:
    dec = [c - e for c, e in zip(clip_s, enc_s)]
    return {
        "clip_p50_ms": 1000 * statistics.median(clip_s),
        "encoder_ms": 1000 * statistics.median(enc_s),
        "decoding_ms": 1000 * statistics.median(dec),
        "tokens": statistics.median(tokens),
        "ms_per_token": 1000 * sum(dec) / sum(tokens),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", type=Path)
    ap.add_argument("ct2", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    audios = [load_audio(r.audio) for r in load_manifest(args.manifest)[: args.limit]]
    lines = [
        f"# Where the time goes: ONNX Runtime int8 vs CTranslate2 int8 ({len(audios)} clips, batch 1, greedy)",
        "",
        f"`python benchmarks/cpu_profile.py {args.onnx} {args.ct2} {args.manifest} --threads {args.threads} "
        f"--limit {args.limit}` · medians over clips of each clip's median of {args.repeats}",
        "",
        "| engine | threads | clip p50 (ms) | encoder (ms) | decoding (ms) | tokens | ms / token | raw ORT step (ms) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for th in [int(t) for t in args.threads.split(",")]:
        for name, fn, path in (
            ("onnxruntime int8", profile_ort, args.onnx),
            ("ctranslate2 int8", profile_ct2, args.ct2),
        ):
            r = fn(path, audios, th, args.repeats)
            raw = f"{r['raw_step_ms']:.2f}" if "raw_step_ms" in r else ""
            lines.append(
                f"| {name} | {th} | {r['clip_p50_ms']:.0f} | {r['encoder_ms']:.0f} | {r['decoding_ms']:.0f} "
                f"| {r['tokens']:.0f} | {r['ms_per_token']:.2f} | {raw} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        "Per decoder step of the greedy loop (encoder states given; batch 1, the no-speech score read on the way): "
        "through optimum's wrapper and through the raw session",
        "",
        "| decoder step | threads | steps | loop ms / step | inside the session | outside it | same tokens |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for th in [int(t) for t in args.threads.split(",")]:
        loops = profile_loop(args.onnx, audios, th, args.repeats)
        ref = next(iter(loops.values()))["tokens"]
        for label, r in loops.items():
            lines.append(
                f"| {label} | {th} | {r['steps']:.0f} | {r['loop_ms']:.2f} | {r['session_ms']:.2f} "
                f"| {r['outside_ms']:.2f} | {'yes' if r['tokens'] == ref else 'NO'} |"
            )
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
