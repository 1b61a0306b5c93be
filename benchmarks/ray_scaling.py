"""Scaling on Ray, measured in one run on one machine: corpus transcription in audio-seconds per second for
1, 2 and 4 actors (Ray Data, `mkd transcribe --ray`), and serving with 1 and 2 replicas (Ray Serve, `mkd
serve --ray`) under the closed-loop load of benchmarks/serve_load.py; the single-process figures beside them.

Usage:
    python benchmarks/ray_scaling.py MANIFEST MODEL [--variant int8] [--actors 1,2,4] [--replicas 1,2]
        [--concurrency 8] [--requests 48] [--out benchmarks/results/ray_scaling_cpu.md]

Every configuration shares the machine's cores fairly: with N actors (or replicas) on C cores each gets
C / N CPUs and max(1, C // N) threads. Transcription wall time counts from the job's start to its last shard,
actors' model loading included (what a user waits for).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mkdeploy.audio import load_audio
from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.data import load_manifest
from mkdeploy.distributed.cluster import connect
from mkdeploy.distributed.config import RayConfig
from mkdeploy.distributed.transcribe import ModelSpec, transcribe_on_ray
from mkdeploy.testing.load import ServerProcess, run_load
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber


def transcription_rows(args, rows, cores: int) -> list[str]:
    options = TranscriptionOptions(batch_size=args.batch_size)
    audio_s = sum(len(load_audio(r.audio)) for r in rows) / SAMPLE_RATE
    tr = WhisperTranscriber.from_pretrained(args.model, "auto", "cpu", cores, **_variant(args))
    tr.transcribe_files([rows[0].audio], options)  # warm
    t0 = time.perf_counter()
    tr.transcribe_files([r.audio for r in rows], options)
    single = time.perf_counter() - t0
    del tr
    lines = [f"| single process, {cores} threads (model loaded) | {single:.1f} | {audio_s / single:.2f} | 1.00 | |"]
    connect(None, num_cpus=cores)
    for n in args.actors:
        out = Path(tempfile.mkdtemp(prefix=f"ray_scaling_{n}_"))
        spec = ModelSpec(args.model, "auto", "cpu", args.variant, max(1, cores // n))
        job = transcribe_on_ray(
            rows, spec, options, out, RayConfig(actors=n, actor_cpus=cores / n), shard_size=8, force=True
        )
        shutil.rmtree(out)
        rate = job.audio_seconds / job.seconds
        lines.append(
            f"| Ray Data, {n} actor{'s' * (n > 1)} × {max(1, cores // n)} thread(s) | {job.seconds:.1f} | {rate:.2f} "
            f"| {rate / (audio_s / single):.2f} | {job.first_row_s:.1f} |"
        )
        print(lines[-1], flush=True)
    import ray

    ray.shutdown()
    return lines


def serving_rows(args, rows, cores: int, log_dir: Path) -> list[str]:
    clips = [load_audio(r.audio) for r in rows[:16]]
    lines = []
    for label, flags in [("plain `mkd serve`", [])] + [
        (f"Ray Serve, {n} replica{'s' * (n > 1)}", ["--ray", "--replicas", str(n), "--replica-cpus", str(cores / n)])
        for n in args.replicas
    ]:
        n = int(flags[2]) if flags else 1
        threads = str(max(1, cores // n))
        server = ServerProcess(
            args.model, "--device", "cpu", "--threads", threads, "--max-batch", "8", *flags,
            *(["--variant", args.variant] if args.variant else []), log=log_dir / f"{label[:12]}.log",
        )  # fmt: skip
        try:
            run_load(server.url, clips[:4], 2, 4)  # warm every replica a little
            r = run_load(server.url, clips, args.concurrency, args.requests)
        finally:
            server.stop(timeout=120)
        lines.append(
            f"| {label} × {threads} thread(s) | {r.requests} | {r.errors} | {r.requests_per_s:.2f} | "
            f"{r.audio_s_per_s:.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def _variant(args) -> dict:
    return {"variant": args.variant} if args.variant else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("model")
    ap.add_argument("--variant")
    ap.add_argument("--actors", default="1,2,4")
    ap.add_argument("--replicas", default="1,2")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.actors = [int(x) for x in args.actors.split(",") if x]
    args.replicas = [int(x) for x in args.replicas.split(",") if x]
    cores = os.cpu_count() or 1
    rows = load_manifest(args.manifest)[: args.limit]
    log_dir = Path(tempfile.mkdtemp(prefix="ray_scaling_logs_"))
    t_lines = transcription_rows(args, rows, cores)
    s_lines = serving_rows(args, rows, cores, log_dir) if args.replicas else []
    report = [
        f"# Ray scaling: {Path(args.model).name}{' ' + args.variant if args.variant else ''}, {len(rows)} clips",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {cores} CPU cores, no GPU. Command: "
        f"`python {' '.join(shlex.quote(a) for a in sys.argv)}`",
        "",
        "## Corpus transcription (`mkd transcribe --ray`)",
        "",
        "| configuration | wall s | audio-s / s | vs single process | first row after s |",
        "|---|--:|--:|--:|--:|",
        *t_lines,
        "",
        "Ray rows count actor start-up and model loading (what a user waits for); the single-process row does not.",
        "",
        f"## Serving (`mkd serve --ray`), closed loop: {args.concurrency} callers, {args.requests} requests",
        "",
        "| configuration | requests | errors | requests / s | audio-s / s | p50 ms | p95 ms |",
        "|---|--:|--:|--:|--:|--:|--:|",
        *s_lines,
        "",
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
