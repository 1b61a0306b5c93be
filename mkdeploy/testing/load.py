"""A closed-loop load generator for an OpenAI-compatible transcription server (`mkd serve` or any other).

``concurrency`` callers each send a request, wait for the answer, and send the next, until ``requests``
have been answered: throughput and latency as a fixed population of clients sees them.
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from mkdeploy.audio import SAMPLE_RATE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`mkd serve MODEL` in a subprocess on 127.0.0.1 and a free port, ready once /health answers 200.

    For load runs and tests that need the real server: the process is the one users start, not an app
    object inside the caller (whose event loop and GIL would share the measurement).

    Args:
        model: what ``mkd serve`` accepts.
        flags: further ``mkd serve`` options.
        log: file that receives the server's output.
        ready_timeout: seconds to wait for /health.
        python: the interpreter (another venv's, to serve from that install).
        env: the server's environment (None: this process's).
        cwd: its working directory (outside the checkout, to run an installed wheel).

    Raises:
        RuntimeError: the server exited or was not ready in time (the message ends with its log's tail).
    """

    def __init__(
        self,
        model: str | Path,
        *flags: str,
        log: Path,
        ready_timeout: float = 300.0,
        python: str | Path = sys.executable,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [str(python), "-m", "mkdeploy.cli.main", "serve", str(model), "--port", str(self.port), *flags]
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=cwd)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready in {ready_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the server drains in-flight requests), then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@dataclass
class LoadResult:
    """What one load level measured.

    Attributes:
        concurrency: callers in flight.
        requests: requests answered.
        errors: answers other than 200.
        wall_s: from the first request to the last answer.
        requests_per_s: answered requests per second of wall time.
        audio_s_per_s: seconds of audio transcribed per second of wall time.
        p50_ms, p95_ms: request latency percentiles.
    """

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    requests_per_s: float
    audio_s_per_s: float
    p50_ms: float
    p95_ms: float


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV")
    return buf.getvalue()


class _Tally:
    """Latencies and counts shared by the caller threads."""

    def __init__(self, requests: int):
        self.ids = iter(range(requests))
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.audio_s = 0.0
        self.errors = 0

    def next_id(self) -> int | None:
        with self.lock:
            return next(self.ids, None)

    def add(self, seconds: float, ok: bool, audio_s: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.audio_s += audio_s if ok else 0.0
            self.errors += 0 if ok else 1


def run_load(
    url: str, clips: Sequence[np.ndarray], concurrency: int, requests: int, model: str = "whisper-1", api_key: str = ""
) -> LoadResult:
    """Drive ``url`` (the server's root) with ``concurrency`` closed-loop callers.

    Args:
        url: e.g. ``http://127.0.0.1:8000``.
        clips: 16 kHz clips sent in turn.
        concurrency: callers.
        requests: total requests (bounded: this is a benchmark, not a flood).
        model: the ``model`` field sent.
        api_key: sent as a bearer token when given.

    Returns:
        a :class:`LoadResult`.
    """
    bodies = [(wav_bytes(c), len(c) / SAMPLE_RATE) for c in clips]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    tally = _Tally(requests)

    def caller() -> None:
        with httpx.Client(timeout=600) as client:
            while (i := tally.next_id()) is not None:
                body, seconds = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                r = client.post(
                    f"{url}/v1/audio/transcriptions",
                    files={"file": (f"{i}.wav", body)},
                    data={"model": model},
                    headers=headers,
                )
                tally.add(time.perf_counter() - t0, r.status_code == 200, seconds)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(caller) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - t0
    ms = np.array(tally.latencies) * 1000
    return LoadResult(
        concurrency,
        len(ms),
        tally.errors,
        round(wall, 2),
        round(len(ms) / wall, 3),
        round(tally.audio_s / wall, 2),
        round(float(np.percentile(ms, 50)), 1),
        round(float(np.percentile(ms, 95)), 1),
    )
