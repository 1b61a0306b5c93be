"""`mkd bench`'s measurement: load, time every clip through every model (interleaved), throughput."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mkdeploy.audio import SAMPLE_RATE, load_audio
from mkdeploy.bench.figures import BenchReport, ModelResult, ThroughputResult
from mkdeploy.bench.machine import environment
from mkdeploy.bench.memory import fresh_rss_mb, rss_mb
from mkdeploy.bench.runners import Runner, dir_size_mb
from mkdeploy.bench.specs import ModelSpec, load_runner
from mkdeploy.data import load_manifest
from mkdeploy.errors import MkdError
from mkdeploy.evaluate import error_rates


def _percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_bench(
    manifest: str | Path,
    specs: Sequence[ModelSpec],
    reference: str | None = None,
    repeats: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    language: str = "en",
    limit: int | None = None,
    max_new_tokens: int | None = None,
    on_progress: Callable[[str], None] | None = None,
    threads: int = 0,
    dtype: str = "auto",
    batch_sizes: Sequence[int] = (),
    memory: str = "fresh",
) -> BenchReport:
    """Benchmark models on a manifest's clips.

    Args:
        manifest: JSONL manifest or folder (references optional; without them only reference-relative
            error rates are given).
        specs: the models.
        reference: name of the model others are compared with (default: the first).
        repeats: timed transcriptions of each clip per model.
        warmup: untimed passes over the first clip per model.
        device: "cpu", "cuda" or "auto".
        language: for multilingual models.
        limit: use only the first N clips.
        max_new_tokens: cap on generated tokens (None: the model's own limit).
        on_progress: called with a short status line.
        threads: CPU threads for every engine alike (PyTorch, ONNX Runtime's intra-op pool, CTranslate2's
            intra_threads); 0 leaves each its default.
        dtype: PyTorch weights ("auto": float16 on CUDA, float32 on CPU).
        batch_sizes: also decode all clips in batches of each size and report clips/s (throughput).
        memory: "fresh": each model's RSS in a process of its own (:func:`fresh_rss_mb`); "process": the
            whole RSS of a process that runs only that model, nothing imported first, and its cold start
            (process start to first transcript); "inline": in this one, models loaded in turn (no extra
            load, but the figures depend on the order).

    Returns:
        the report (write it with :func:`write_report`).
    """
    progress = on_progress or (lambda _: None)
    if memory not in ("fresh", "process", "inline"):
        raise MkdError(f"--memory {memory}: choose fresh, process or inline")
    reference = _check_names(specs, reference)
    rows = load_manifest(manifest)[:limit]
    audios = [load_audio(r.audio) for r in rows]
    audio_seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    args = (device, language, max_new_tokens, threads, dtype, audios[0], warmup, progress)
    loaded = {s.name: _load(s, *args) for s in specs}
    cold: dict[str, float] = {}
    if memory in ("fresh", "process"):
        for s in specs:
            progress(f"memory of {s.name} (fresh process)")
            run, load_s, _ = loaded[s.name]
            rss, cold[s.name] = fresh_rss_mb(s, args[:5], audios[0], warmup, whole=memory == "process")
            loaded[s.name] = (run, load_s, rss)
    env = environment(device, threads)
    runners = {n: run for n, (run, _, _) in loaded.items()}
    timed = _time_runs(runners, audios, repeats, progress)

    refs = [r.text for r in rows]
    report = BenchReport(str(manifest), reference, repeats, warmup, round(audio_seconds, 2), env, memory=memory)
    for s in specs:
        run, load_s, rss = loaded[s.name]
        texts = timed.texts[s.name]
        rates = error_rates([t or "" for t in refs], texts) if all(t is not None for t in refs) else None
        vs = error_rates(timed.texts[reference], texts)
        report.models.append(_model_result(s, run, timed, audio_seconds, load_s, rss, rates, vs))
        if memory == "process":
            report.models[-1].cold_start_s = round(cold[s.name], 2)
        report.transcripts[s.name] = texts
    _set_speedups(report.models, reference)
    report.throughput = [r for b in batch_sizes for r in _throughput(runners, audios, b, progress)]
    return report


def _set_speedups(models: list[ModelResult], reference: str) -> None:
    ref_p50 = next(m.latency_p50 for m in models if m.name == reference)
    for m in models:
        m.speedup = ref_p50 / m.latency_p50


def _check_names(specs: Sequence[ModelSpec], reference: str | None) -> str:
    """The reference model's name (the first by default), after checking the names are unique."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise MkdError(f"--model names must be unique (got {', '.join(names)})")
    reference = reference or names[0]
    if reference not in names:
        raise MkdError(f"--reference {reference}: not one of the models ({', '.join(names)})")
    return reference


def _load(spec: ModelSpec, device: str, language: str, max_new_tokens, threads, dtype, first, warmup: int, progress):
    """(runner, load + warm-up seconds, resident memory it added in MB)."""
    progress(f"loading {spec.name}")
    before, t0 = rss_mb(), time.perf_counter()
    runner = load_runner(spec, device, language, max_new_tokens, threads, dtype)
    for _ in range(warmup):
        runner.transcribe(first)
    return runner, time.perf_counter() - t0, rss_mb() - before


@dataclass
class _Timings:
    """Per model: seconds per clip per repeat, the last transcript and token count of each clip, and the
    peak GPU memory (PyTorch on CUDA only)."""

    latencies: dict[str, list[list[float]]]
    texts: dict[str, list[str]]
    tokens: dict[str, list[int]]
    gpu_peak: dict[str, float | None]


def _time_runs(runners: dict[str, Runner], audios, repeats: int, progress) -> _Timings:
    """Every clip through every model, ``repeats`` times; the model order rotates each round so no model is
    always first on a clip (caches, turbo clocks)."""
    import torch  # heavy; loaded once the models are (the runners imported it already)

    cuda = torch.cuda.is_available()
    names = list(runners)
    t = _Timings({n: [[] for _ in audios] for n in names}, {n: [""] * len(audios) for n in names},
                 {n: [0] * len(audios) for n in names}, {})  # fmt: skip
    for rep in range(repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for i, audio in enumerate(audios):
            for n in order:
                r = runners[n]
                on_gpu = cuda and r.backend == "torch" and r.device == "cuda"
                if on_gpu:
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                t.texts[n][i], t.tokens[n][i] = r.transcribe(audio)
                if cuda and r.device == "cuda":
                    torch.cuda.synchronize()
                t.latencies[n][i].append(time.perf_counter() - t0)
                if on_gpu:
                    t.gpu_peak[n] = max(t.gpu_peak.get(n) or 0.0, torch.cuda.max_memory_allocated() / 1e6)
            progress(f"round {rep + 1}/{repeats}, clip {i + 1}/{len(audios)}")
    return t


def _throughput(runners: dict[str, Runner], audios, batch_size: int, progress) -> list[ThroughputResult]:
    """Every model decodes the clips (repeated up to one full batch) ``batch_size`` at a time."""
    import torch  # heavy; loaded once the models are (the runners imported it already)

    clips = (audios * (batch_size // len(audios) + 1))[: max(len(audios), batch_size)]
    batches = [clips[i : i + batch_size] for i in range(0, len(clips), batch_size)]
    seconds = sum(len(a) for a in clips) / SAMPLE_RATE
    out = []
    for name, r in runners.items():
        progress(f"throughput: {name}, batch {batch_size}")
        r.transcribe_batch(batches[0])  # warm-up: this batch shape's first run allocates
        times = []
        for b in batches:
            t0 = time.perf_counter()
            r.transcribe_batch(b)
            if r.device == "cuda" and torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        total = sum(times)
        out.append(ThroughputResult(name, batch_size, len(clips), round(total, 3), len(clips) / total,
                                    seconds / total, _percentile(times, 50), _percentile(times, 90)))  # fmt: skip
    return out


def _model_result(spec: ModelSpec, r: Runner, t: _Timings, audio_seconds: float, load_s: float, rss: float, rates, vs):
    n = spec.name
    per_clip = [float(np.median(x)) for x in t.latencies[n]]  # each clip's median over the repeats
    total = sum(per_clip)
    return ModelResult(
        name=n,
        path=str(spec.path),
        backend=r.backend,
        variant=r.variant,
        device=r.device,
        provider=r.provider,
        params=r.params(),
        size_mb=round(dir_size_mb(spec.path), 1),
        clips=len(per_clip),
        latency_p50=_percentile(per_clip, 50),
        latency_p90=_percentile(per_clip, 90),
        latency_p99=_percentile(per_clip, 99),
        latency_mean=total / len(per_clip),
        rtf=total / audio_seconds,
        audio_s_per_s=audio_seconds / total,
        tokens_per_s=sum(t.tokens[n]) / total,
        rss_mb=round(rss, 1),
        gpu_mem_mb=t.gpu_peak.get(n),
        wer=rates.wer if rates else None,
        cer=rates.cer if rates else None,
        wer_vs_reference=vs.wer,
        cer_vs_reference=vs.cer,
        load_s=round(load_s, 2),
        windows=r.windows,
    )
