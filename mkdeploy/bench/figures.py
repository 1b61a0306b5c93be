"""What `mkd bench` measures, as dataclasses (bench.json holds them)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    #: seconds from starting a process to its first transcript (``--memory process`` only)
    cold_start_s: float | None = None


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
    "process": "the whole process of each model run alone, its libraries included (what a server running it holds)",
    "inline": "one process, models loaded in turn: a model can reuse memory an earlier one freed",
}
