"""Load table for `mkd serve`: batching off (--max-batch 1) vs on, closed-loop callers at several
concurrencies, requests/s, audio-seconds/s and p50/p95 latency, measured in one run on one machine.

Usage:
    python benchmarks/serve_load.py MODEL [--variant int8] [--levels 1,4,16] [--per-caller 3]
        [--audio DIR] [--max-batch 16] [--encoder-buckets 10,30] [--out benchmarks/results/serve_load_cpu.md]

Each mode gets a fresh server (a `mkd serve` subprocess on 127.0.0.1), warmed before timing; every level
sends max(8, 3 x concurrency) requests. Clips default to the two committed reference clips.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from mkdeploy.audio import expand_audio_paths, load_audio, reference_clips
from mkdeploy.constants import SAMPLE_RATE
from mkdeploy.testing.load import LoadResult, ServerProcess, run_load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--variant")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--per-caller", type=int, default=3)
    ap.add_argument("--audio", nargs="*", help="audio files or folders (default: the committed reference clips)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=50)
    ap.add_argument("--encoder-buckets")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    clips = [load_audio(p) for p in expand_audio_paths(args.audio)] if args.audio else [a for a, _ in reference_clips()]
    common = ["--device", args.device, "--max-queue", "256"]
    common += ["--variant", args.variant] if args.variant else []
    common += ["--encoder-buckets", args.encoder_buckets] if args.encoder_buckets else []
    on = ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    modes = {"off": ["--max-batch", "1"], "on": on, "on, packed": [*on, "--pack"]}
    levels = [int(x) for x in args.levels.split(",")]
    results: dict[str, list[LoadResult]] = {}
    for mode, flags in modes.items():
        server = ServerProcess(
            args.model, *common, *flags, log=Path(tempfile.gettempdir()) / (f"serve_load_{mode.replace(', ', '_')}.log")
        )
        url = server.url
        try:
            run_load(url, clips, 2, 4)  # warm the connection path and the batch shapes
            results[mode] = []
            for c in levels:
                r = run_load(url, clips, c, max(8, args.per_caller * c))
                results[mode].append(r)
                print(mode, asdict(r), flush=True)
        finally:
            server.stop()
    table = _table(results, levels)
    print(table)
    if args.out:
        seconds = sum(len(c) for c in clips) / SAMPLE_RATE / len(clips)
        head = (
            f"# `mkd serve` load: batching off vs on\n\nCommand: `python {' '.join(map(shlex.quote, sys.argv))}`\n\n"
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {args.model}"
            f"{' (' + args.variant + ')' if args.variant else ''} on {args.device}; {len(clips)} clips of "
            f"{seconds:.1f} s on average; closed-loop callers, max(8, {args.per_caller} x concurrency) requests per "
            f"level; on = --max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}, packed adds --pack; "
            "VAD on (the default).\n\n"
        )
        args.out.write_text(head + table + "\n")


def _table(results: dict[str, list[LoadResult]], levels: list[int]) -> str:
    rows = [
        "| concurrency | batching | requests | errors | req/s | audio s/s | p50 ms | p95 ms | throughput on/off |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(levels):
        off = results["off"][i]
        for mode in results:
            r = results[mode][i]
            ratio = f"{r.requests_per_s / off.requests_per_s:.2f}x" if mode != "off" else ""
            rows.append(
                f"| {c} | {mode} | {r.requests} | {r.errors} | {r.requests_per_s:.2f} | {r.audio_s_per_s:.2f} "
                f"| {r.p50_ms:.0f} | {r.p95_ms:.0f} | {ratio} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
