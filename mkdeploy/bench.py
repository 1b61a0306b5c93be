"""`mkd bench`: latency and accuracy of several models on the same clips, side by side.

Every model transcribes every clip one at a time (batch 1, greedy, no timestamps: the serving case whose
latency users quote). After a warm-up, repetitions are interleaved across models and the model order
rotates each round, so thermal or background drift hits all models alike.

Runners share one small interface (``load``/``transcribe``), so PyTorch directories, ONNX exports (any
variant folder) and CTranslate2 directories (faster-whisper's format) sit on one table.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mkdeploy.audio import SAMPLE_RATE, load_audio
from mkdeploy.data import load_manifest
from mkdeploy.errors import MkdError, ModelError
from mkdeploy.evaluate import error_rates
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.dirs import is_ct2_dir, is_onnx_dir
from mkdeploy.models.ggml import is_ggml_dir
from mkdeploy.models.window import parse_buckets
from mkdeploy.ort import OrtOptions
from mkdeploy.runners import CT2Runner, GgmlRunner, Runner, WhisperRunner, dir_size_mb
from mkdeploy.stats import pct
from mkdeploy.version import version_info


@dataclass
class ModelSpec:
    """One ``--model NAME=PATH[:buckets=5,10,20,30][:compute_type=int8]`` entry.

    Attributes:
        buckets: encoder windows in seconds for this entry (None: the model's own; ``(30,)`` for Whisper's
            30 s window), so one model can be benched with and without its buckets.
        compute_type: CTranslate2's compute type (``int8``, ``int8_float16``, ``float16``, ``float32``;
            None: ``default``, the type the model was saved in), so faster-whisper's fastest path is the
            yardstick. CTranslate2 entries only.
        ort: ONNX Runtime's memory switches, e.g. ``no-arena,no-prepack`` or ``lean``
            (:meth:`mkdeploy.ort.OrtOptions.from_memory_flags`; None: its defaults). ONNX entries only.
    """

    name: str
    path: Path
    buckets: tuple[int, ...] | None = None
    compute_type: str | None = None
    ort: str | None = None


#: the ``:key=value`` suffixes a --model entry takes
SPEC_KEYS = ("buckets", "compute_type", "ort")


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``NAME=PATH`` with optional ``:buckets=5,10,20,30`` and ``:compute_type=int8`` suffixes."""

    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise MkdError(f"--model {text!r}: expected NAME=PATH, e.g. --model teacher=models/base")
    path, *pairs = rest.split(":")
    opts: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in SPEC_KEYS or not value:
            raise MkdError(
                f"--model {text!r}: unknown suffix {pair!r}; use :buckets=5,10,20,30, :compute_type=int8 or :ort=lean"
            )
        opts[key] = value
    buckets = parse_buckets(opts["buckets"]) if "buckets" in opts else None
    if "ort" in opts:
        OrtOptions.from_memory_flags(opts["ort"])  # a bad flag fails here, before any model loads
    return ModelSpec(name, Path(path), buckets, opts.get("compute_type"), opts.get("ort"))


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (empty: no throughput runs)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = [0]
    if any(b < 1 for b in sizes):
        raise MkdError(f"--batch-size {text!r}: expected positive integers such as 1,8,32")
    return sizes


@dataclass
class ModelResult:
    """Figures for one model; latencies in seconds per clip.

    Attributes:
        rss_mb: resident memory the model added when loaded and warmed up (in a fresh process by default).
        gpu_mem_mb: peak GPU memory PyTorch allocated while this model ran (None off GPU or for ORT/CT2).
        wer_vs_reference, cer_vs_reference: error rates against the reference model's transcripts.
        speedup: the reference model's p50 divided by this model's.
    """

    name: str
    path: str
    backend: str
    variant: str
    device: str
    provider: str
    params: int
    size_mb: float
    clips: int
    latency_p50: float
    latency_p90: float
    latency_p99: float
    latency_mean: float
    rtf: float
    audio_s_per_s: float
    tokens_per_s: float
    rss_mb: float
    gpu_mem_mb: float | None
    wer: float | None
    cer: float | None
    wer_vs_reference: float | None = None
    cer_vs_reference: float | None = None
    speedup: float | None = None
    load_s: float = 0.0
    windows: str = "30"


@dataclass
class ThroughputResult:
    """One model decoding clips in batches of ``batch_size`` (all clips once, after one warm-up batch).

    Attributes:
        batch_p50, batch_p90: seconds per batch.
    """

    name: str
    batch_size: int
    clips: int
    seconds: float
    clips_per_s: float
    audio_s_per_s: float
    batch_p50: float
    batch_p90: float


@dataclass
class BenchReport:
    manifest: str
    reference: str | None
    repeats: int
    warmup: int
    audio_seconds: float
    environment: dict
    models: list[ModelResult] = field(default_factory=list)
    transcripts: dict[str, list[str]] = field(default_factory=dict)
    throughput: list[ThroughputResult] = field(default_factory=list)
    #: how rss_mb was measured: "fresh" or "inline" (:func:`run_bench`'s ``memory``)
    memory: str = "fresh"


MEMORY_NOTES = {
    "fresh": "each model in a fresh process that has imported the engines' libraries first",
    "inline": "one process, models loaded in turn: a model can reuse memory an earlier one freed",
}


def load_runner(
    spec: ModelSpec,
    device: str,
    language: str,
    max_new_tokens: int | None = None,
    threads: int = 0,
    dtype: str = "auto",
) -> Runner:
    if not spec.path.exists():
        raise ModelError(f"--model {spec.name}={spec.path}: no such directory")
    if is_ggml_dir(spec.path):
        if spec.compute_type or spec.ort:
            raise MkdError(
                f"--model {spec.name}: a whisper.cpp model; its precision is the file's (mkd export --quantization)"
            )
        return GgmlRunner(spec.path, language, max_new_tokens, spec.buckets, threads)
    if is_ct2_dir(spec.path):
        if spec.buckets and spec.buckets != (30,):
            raise MkdError(f"--model {spec.name}: encoder buckets need a PyTorch or ONNX model, not CTranslate2")
        if spec.ort:
            raise MkdError(f"--model {spec.name}: :ort= sets ONNX Runtime's memory options, not CTranslate2's")
        return CT2Runner(spec.path, device, language, max_new_tokens, spec.compute_type, threads)
    if spec.compute_type:
        raise MkdError(
            f"--model {spec.name}: compute_type is CTranslate2's; an ONNX export's precision is its variant folder"
        )
    if spec.ort and not is_onnx_dir(spec.path):
        raise MkdError(f"--model {spec.name}: :ort= sets ONNX Runtime's memory options; {spec.path} is not an export")
    ort = OrtOptions.from_memory_flags(spec.ort) if spec.ort else None  # load_engine adds the threads
    return WhisperRunner(spec.path, device, language, max_new_tokens, spec.buckets, threads, dtype, ort)


# -- measuring --------------------------------------------------------------------------------------


def rss_mb() -> float:
    import psutil  # only the bench's memory figures need it

    return psutil.Process().memory_info().rss / 1e6


#: the engines' libraries a fresh process imports before the model is loaded, so the RSS a model adds does
#: not include them (nor depend on which model happened to import them first)
ENGINE_LIBRARIES = ("torch", "transformers", "onnxruntime", "ctranslate2", "pywhispercpp.model")


def _rss_child(conn, spec: ModelSpec, load_args: tuple, first: np.ndarray, warmup: int) -> None:
    """In a spawned process: the RSS (MB) that loading ``spec`` and warming it up adds."""
    import importlib

    try:
        for lib in ENGINE_LIBRARIES:
            try:
                importlib.import_module(lib)
            except ImportError:
                pass
        before = rss_mb()
        runner = load_runner(spec, *load_args)
        for _ in range(max(1, warmup)):
            runner.transcribe(first)
        conn.send(("ok", rss_mb() - before))
    except Exception as e:  # reported to the parent, which raises it with the model's name
        conn.send(("error", f"{type(e).__name__}: {e}"))


def fresh_rss_mb(spec: ModelSpec, load_args: tuple, first: np.ndarray, warmup: int, timeout_s: float = 900) -> float:
    """Resident memory a model adds to a fresh process (spawned, the engines' libraries imported first):
    in the bench's own process the figure depends on load order, since memory a model frees stays with
    the allocator and the next model reuses it (ONNX models loaded after PyTorch ones read 0-1 MB).

    Args:
        spec: the model.
        load_args: :func:`load_runner`'s arguments after ``spec``.
        first: the warm-up clip.
        warmup: warm-up passes (at least one, so lazily built kernels and caches are counted).
        timeout_s: how long the child may take.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork would inherit this process's memory and threads
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_rss_child, args=(send, spec, load_args, first, warmup), daemon=True)
    child.start()
    send.close()
    try:
        if not recv.poll(timeout_s):
            raise MkdError(f"--model {spec.name}: measuring its memory took over {timeout_s:.0f} s")
        status, value = recv.recv()
    except EOFError:
        raise MkdError(f"--model {spec.name}: the process measuring its memory died (out of memory?)") from None
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    if status != "ok":
        raise MkdError(f"--model {spec.name}: loading it in a fresh process failed: {value}")
    return float(value)


def environment(device: str, threads: int = 0) -> dict:
    """Machine and package facts stored with the figures."""

    import onnxruntime as ort  # heavy; only the ONNX backend needs it
    import torch  # heavy; imported on use so the core import stays light

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in (
        "torch",
        "transformers",
        "optimum",
        "optimum-onnx",
        "onnxruntime-gpu",
        "onnxruntime",
        "ctranslate2",
        "pywhispercpp",
        "peft",
        "numpy",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    env = {
        **version_info(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "threads": threads or "engine defaults",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime_providers": ort.get_available_providers(),
        "device": device,
        "packages": versions,
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


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
        memory: "fresh": each model's RSS in a process of its own (:func:`fresh_rss_mb`); "inline": in
            this one, models loaded in turn (no extra load, but the figures depend on the order).

    Returns:
        the report (write it with :func:`write_report`).
    """
    progress = on_progress or (lambda _: None)
    if memory not in ("fresh", "inline"):
        raise MkdError(f"--memory {memory}: choose fresh or inline")
    reference = _check_names(specs, reference)
    rows = load_manifest(manifest)[:limit]
    audios = [load_audio(r.audio) for r in rows]
    audio_seconds = sum(len(a) for a in audios) / SAMPLE_RATE
    args = (device, language, max_new_tokens, threads, dtype, audios[0], warmup, progress)
    loaded = {s.name: _load(s, *args) for s in specs}
    if memory == "fresh":
        for s in specs:
            progress(f"memory of {s.name} (fresh process)")
            run, load_s, _ = loaded[s.name]
            loaded[s.name] = (run, load_s, fresh_rss_mb(s, args[:5], audios[0], warmup))
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


# -- writing ----------------------------------------------------------------------------------------


def markdown_table(report: BenchReport) -> str:
    """The bench table in Markdown (what bench.md holds)."""
    env = report.environment
    lines = [
        f"# mkd bench: {len(report.models)} models, {report.models[0].clips if report.models else 0} clips "
        f"({report.audio_seconds:.1f} s of audio)",
        "",
        f"{env.get('cpu')} · threads: {env.get('threads', 'engine defaults')} ({env.get('torch_threads')} torch)"
        + (f" · {env['gpu']}" if env.get("gpu") else "")
        + f" · batch 1, greedy · {report.warmup} warm-up, {report.repeats} interleaved repeats, median per clip"
        + f" · reference: {report.reference}",
        "",
        "| model | backend | variant | windows (s) | device / provider | params (M) | size (MB) | p50 (ms) | p90 (ms) "
        "| p99 (ms) | RTF | audio s/s | tokens/s | RSS (MB) | WER % | CER % | WER vs ref % | speed-up |",
        "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in report.models:
        dev = m.provider or m.device
        lines.append(
            f"| {m.name} | {m.backend} | {m.variant} | {m.windows} | {dev} | {m.params / 1e6:.1f} | {m.size_mb:.0f} "
            f"| {1000 * m.latency_p50:.0f} | {1000 * m.latency_p90:.0f} | {1000 * m.latency_p99:.0f} | {m.rtf:.3f} "
            f"| {m.audio_s_per_s:.1f} | {m.tokens_per_s:.0f} | {m.rss_mb:.0f} | {pct(m.wer, '')} | {pct(m.cer, '')} "
            f"| {pct(m.wer_vs_reference, '')} | {m.speedup:.2f}x |"
        )
    lines += [
        "",
        f"RSS: resident memory added by loading and warming up the model ({MEMORY_NOTES[report.memory]}). "
        "Speed-up: reference p50 / model p50.",
        "",
    ]
    if report.throughput:
        lines += [
            "## Throughput (all clips in batches, after one warm-up batch)",
            "",
            "| model | batch | clips | clips/s | audio s/s | batch p50 (ms) | batch p90 (ms) |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for t in report.throughput:
            lines.append(
                f"| {t.name} | {t.batch_size} | {t.clips} | {t.clips_per_s:.2f} | {t.audio_s_per_s:.1f} "
                f"| {1000 * t.batch_p50:.0f} | {1000 * t.batch_p90:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(report: BenchReport, path: Path) -> None:
    """Latency (p50, ms) against WER (against references, else against the reference model)."""
    import matplotlib  # only `mkd bench --plot` needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # only `mkd bench --plot` needs it

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    use_ref = all(m.wer is not None for m in report.models)
    for m in report.models:
        x, y = 1000 * m.latency_p50, 100 * ((m.wer if use_ref else m.wer_vs_reference) or 0.0)
        ax.scatter(x, y, s=40)
        ax.annotate(m.name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("latency p50 per clip (ms)")
    ax.set_ylabel("WER (%)" + ("" if use_ref else f" against {report.reference}"))
    ax.set_title("latency vs WER (lower left is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: BenchReport, out: str | Path, force: bool = False) -> Path:
    """Write bench.json, bench.md and latency_vs_wer.png into ``out`` (atomically, as one directory)."""

    out = Path(out)
    with atomic_output_dir(out, force=force) as tmp:
        (tmp / "bench.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False) + "\n")
        (tmp / "bench.md").write_text(markdown_table(report))
        plot(report, tmp / "latency_vs_wer.png")
    return out
