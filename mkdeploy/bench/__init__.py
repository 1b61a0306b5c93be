"""`mkd bench`: latency and accuracy of several models on the same clips, side by side.

Every model transcribes every clip one at a time (batch 1, greedy, no timestamps: the serving case whose
latency users quote). After a warm-up, repetitions are interleaved across models and the model order
rotates each round, so thermal or background drift hits all models alike.

Runners share one small interface (``load``/``transcribe``), so PyTorch directories, ONNX exports (any
variant folder), CTranslate2 directories (faster-whisper's format) and whisper.cpp exports sit on one table.

By job: ``specs`` (the --model entries and their runners, ``runners``), ``run`` (timing), ``memory`` (RSS in a
fresh process), ``machine`` (what ran it), ``figures`` (the results) and ``tables`` (bench.md, the plot, bench.json).
"""

from __future__ import annotations

from mkdeploy.bench.figures import MEMORY_NOTES, BenchReport, ModelResult, ThroughputResult
from mkdeploy.bench.machine import environment
from mkdeploy.bench.memory import ENGINE_LIBRARIES, fresh_rss_mb, rss_mb
from mkdeploy.bench.run import run_bench
from mkdeploy.bench.specs import SPEC_KEYS, ModelSpec, load_runner, parse_batch_sizes, parse_model_spec
from mkdeploy.bench.tables import markdown_table, plot, write_report

__all__ = [
    "BenchReport",
    "ENGINE_LIBRARIES",
    "MEMORY_NOTES",
    "ModelResult",
    "ModelSpec",
    "SPEC_KEYS",
    "ThroughputResult",
    "environment",
    "fresh_rss_mb",
    "load_runner",
    "markdown_table",
    "parse_batch_sizes",
    "parse_model_spec",
    "plot",
    "rss_mb",
    "run_bench",
    "write_report",
]
