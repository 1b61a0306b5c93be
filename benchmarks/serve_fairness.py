"""A short clip during a long upload on `mkd serve`: latency alone and shared, with and without yielding
between decoder steps (issue 45), the long file's time and transcript, and the server's memory.

Usage:
    python benchmarks/serve_fairness.py MODEL --audio DIR [--variant int8] [--minutes 10] [--shorts 5]
        [--out benchmarks/results/serve_fairness_cpu.md]

MODEL is an ONNX export (or any `mkd serve` model); DIR holds speech clips (e.g. a `make demo` corpus split),
joined with 0.6 s pauses into one recording of at least --minutes, sent as one 16 kHz FLAC. The short clip is
the committed reference clip. For each mode (`--yield-steps`, the default, and `--no-yield-steps`) a fresh
server (a `mkd serve` subprocess on 127.0.0.1, default flags otherwise) is timed:

1. the short clip alone, --shorts times in a row (median);
2. the long upload alone (its transcript kept);
3. the long upload again, and once it is decoding, the short clip --shorts times in a row (median, max);
4. the server's resident memory idle (after warm-up) and at its peak (VmHWM, over the whole mode).

The long upload's shared transcript is compared with its transcript alone.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from mkdeploy.audio import SAMPLE_RATE, expand_audio_paths, load_audio, reference_clips
from mkdeploy.bench import environment
from mkdeploy.testing.load import ServerProcess, wav_bytes

PAUSE_S = 0.6


def long_recording(files: list[Path], minutes: float) -> np.ndarray:
    """The clips joined with pauses (repeated as needed) up to ``minutes``."""
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    clips = [load_audio(f) for f in files]
    parts, total, i = [], 0, 0
    while total < minutes * 60 * SAMPLE_RATE:
        parts += [clips[i % len(clips)], pause]
        total += len(clips[i % len(clips)]) + len(pause)
        i += 1
    return np.concatenate(parts)


def flac_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="FLAC")
    return buf.getvalue()


def post(url: str, name: str, data: bytes, timeout: float = 3600) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = httpx.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": (name, data)},
        data={"model": "whisper-1", "response_format": "json"},
        timeout=timeout,
    )
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()["text"]


def rss_mb(pid: int, field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_mode(model: str, flags: list[str], short: bytes, long: bytes, shorts: int, log: Path) -> dict:
    server = ServerProcess(model, *flags, "--request-timeout", "3600", log=log)
    try:
        url, pid = server.url, server.proc.pid
        for _ in range(2):
            post(url, "short.wav", short)  # warm-up
        idle = rss_mb(pid, "VmRSS")
        alone = [post(url, "short.wav", short)[0] for _ in range(shorts)]
        long_alone_s, long_alone_text = post(url, "long.flac", long)

        result: dict = {}

        def send_long() -> None:
            result["long"] = post(url, "long.flac", long)

        t = threading.Thread(target=send_long)
        t.start()
        # the upload is decoding once its pieces are queued: poll the server's queue gauge
        while "long" not in result:
            m = httpx.get(f"{url}/metrics", timeout=10).text
            depth = next((float(x.split()[-1]) for x in m.splitlines() if x.startswith("mkd_queue_depth ")), 0.0)
            if depth >= 1:
                break
            time.sleep(0.05)
        shared = [post(url, "short.wav", short)[0] for _ in range(shorts)]
        done_while_long = "long" not in result
        t.join()
        long_shared_s, long_shared_text = result["long"]
        return {
            "short_alone_ms": 1000 * statistics.median(alone),
            "short_shared_ms": 1000 * statistics.median(shared),
            "short_shared_max_ms": 1000 * max(shared),
            "shorts_sent_during_upload": done_while_long,
            "long_alone_s": long_alone_s,
            "long_shared_s": long_shared_s,
            "long_same_text": long_shared_text == long_alone_text,
            "idle_rss_mb": idle,
            "peak_rss_mb": rss_mb(pid, "VmHWM"),
        }
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--audio", nargs="+", required=True, help="speech clips or folders for the long recording")
    ap.add_argument("--variant")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--shorts", type=int, default=5)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    files = expand_audio_paths(a.audio)
    long_audio = long_recording(files, a.minutes)
    long = flac_bytes(long_audio)
    clip = reference_clips()[0][0]
    short = wav_bytes(clip)
    common = ["--device", "cpu"] + (["--variant", a.variant] if a.variant else [])
    modes = {"yield between steps (default)": ["--yield-steps"], "no yield (--no-yield-steps)": ["--no-yield-steps"]}
    rows = {}
    for name, flags in modes.items():
        rows[name] = run_mode(
            a.model, [*common, *flags], short, long, a.shorts, Path(tempfile.gettempdir()) / "serve_fairness.log"
        )
        print(name, rows[name], flush=True)

    env = environment("cpu")
    lines = [
        "# A short clip during a long upload on `mkd serve` (issue 45)",
        "",
        f"Command: `python benchmarks/serve_fairness.py {a.model} --audio {' '.join(a.audio)}"
        + (f" --variant {a.variant}" if a.variant else "")
        + f" --minutes {a.minutes:g} --shorts {a.shorts}`",
        "",
        f"Machine: {env['cpu']} ({env['cpu_isa']}), {env['cpu_count']} cores; commit {env['commit']}. Long upload: "
        f"{len(long_audio) / SAMPLE_RATE / 60:.1f} min of speech ({len(long) / 1e6:.1f} MB FLAC), response_format json; "
        f"short clip: {len(clip) / SAMPLE_RATE:.1f} s, sent {a.shorts} times in a row alone and again once the upload "
        "is decoding. One server per mode, otherwise default flags (VAD on, pieces cut at pauses, 1 piece per "
        "decode call on CPU).",
        "",
        "| mode | short alone p50 ms | short during upload p50 ms | max ms | ratio | upload alone s | upload "
        "shared s | same upload transcript | idle RSS MB | peak RSS MB |",
        "|---|--:|--:|--:|--:|--:|--:|---|--:|--:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['short_alone_ms']:.0f} | {r['short_shared_ms']:.0f} | {r['short_shared_max_ms']:.0f} | "
            f"{r['short_shared_ms'] / r['short_alone_ms']:.2f}x | {r['long_alone_s']:.1f} | {r['long_shared_s']:.1f} | "
            f"{'yes' if r['long_same_text'] else 'NO'} | {r['idle_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    if not all(r["shorts_sent_during_upload"] for r in rows.values()):
        lines += ["", "Note: in some mode the upload finished before every short clip was answered."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
