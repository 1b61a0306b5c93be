"""Cross-request dynamic batching on one inference thread.

Requests that arrive within ``max_wait_ms`` of the first waiting one are decoded together, up to
``max_batch`` (the scheme of Triton's dynamic batcher and Ray Serve's ``@serve.batch``). Decoding runs on
a single thread beside the event loop, so the server keeps answering /health and accepting uploads while
a batch decodes, and the model is never entered by two threads at once. Each caller awaits its own
future: results are matched to requests by position within a batch, never by content.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.results import Transcription
from mkdeploy.runtime import WINDOW_SAMPLES, TranscriptionOptions
from mkdeploy.serve.metrics import Metrics

logger = logging.getLogger("mkdeploy.serve")

#: decode(audios, options) -> one Transcription per audio, in order
DecodeFn = Callable[[Sequence[np.ndarray], TranscriptionOptions], list[Transcription]]


class QueueFull(Exception):
    """More requests are waiting than ``max_queue`` allows."""


@dataclass
class _Job:
    audio: np.ndarray
    options: TranscriptionOptions
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.monotonic)

    def group_key(self) -> tuple:
        # one decode call takes one set of options; long-form audio (> 30 s) is decoded window by window
        # with timestamps, so it never shares a call with short clips (that would force timestamps on them)
        return (tuple(asdict(self.options).items()), len(self.audio) > WINDOW_SAMPLES)


class Batcher:
    """Collects requests into batches and decodes them on a worker thread.

    Args:
        decode: the model call (:meth:`mkdeploy.runtime.WhisperTranscriber.transcribe_arrays`).
        max_batch: most requests decoded together (1 turns batching off).
        max_wait_ms: how long the first waiting request waits for company.
        max_queue: most requests accepted and not yet answered.
        metrics: where queue depth, batch sizes and inference time go.
    """

    _STOP = object()

    def __init__(self, decode: DecodeFn, max_batch: int, max_wait_ms: float, max_queue: int, metrics: Metrics):
        self.decode, self.max_batch, self.max_wait = decode, max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.max_queue, self.metrics = max_queue, metrics
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mkd-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        self._queue.put(self._STOP)
        self._thread.join()

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, audio: np.ndarray, options: TranscriptionOptions) -> Transcription:
        """Queue one clip and wait for its transcription.

        Raises:
            QueueFull: ``max_queue`` requests are already waiting or decoding.
        """
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull
            self._pending += 1
            self.metrics.queue_depth.set(self._pending)
        loop = asyncio.get_running_loop()
        job = _Job(audio, options, loop.create_future(), loop)
        self._queue.put(job)
        try:
            return await job.future
        finally:
            with self._lock:
                self._pending -= 1
                self.metrics.queue_depth.set(self._pending)

    # -- worker thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is self._STOP:
                return
            batch, stop = self._collect(first)
            for group in _groups(j for j in batch if not j.future.cancelled()):  # timed-out callers are gone
                self._decode_group(group)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus whatever arrives before the wait runs out or the batch is full."""
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is self._STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _decode_group(self, group: list[_Job]) -> None:
        self.metrics.batch_size.observe(len(group))
        options = replace(group[0].options, batch_size=len(group))
        t0 = time.perf_counter()
        try:
            results = self.decode([j.audio for j in group], options)
        except Exception as exc:  # the callers get the error; the worker keeps serving
            logger.exception("batch of %d failed", len(group))
            for j in group:
                j.loop.call_soon_threadsafe(_set_exception, j.future, exc)
            return
        self.metrics.inference.observe(time.perf_counter() - t0)
        for j, r in zip(group, results):
            self.metrics.audio_seconds.inc(len(j.audio) / SAMPLE_RATE)
            j.loop.call_soon_threadsafe(_set_result, j.future, r)


def _groups(jobs) -> list[list[_Job]]:
    groups: dict[tuple, list[_Job]] = {}
    for j in jobs:
        groups.setdefault(j.group_key(), []).append(j)
    return list(groups.values())


def _set_result(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
