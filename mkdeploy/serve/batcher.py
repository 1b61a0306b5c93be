"""Cross-request dynamic batching on one inference thread.

Requests that arrive within ``max_wait_ms`` of the first waiting one are decoded together, up to
``max_batch`` (the scheme of Triton's dynamic batcher and Ray Serve's ``@serve.batch``). Decoding runs on
a single thread beside the event loop, so the server keeps answering /health and accepting uploads while
a batch decodes, and the model is never entered by two threads at once. Each caller awaits its own
future: results are matched to requests by position within a batch, never by content.

Pieces of a long upload (``background=True``, cut at VAD pauses by the router) are a second class of job:
at most ``piece_batch`` of them are decoded per call, and batches of short requests and batches of pieces
take turns. Within a batch of pieces the worker yields at every decoder step
(:func:`mkdeploy.transcription.decoding.between_steps`): when short requests are waiting, it decodes them right there,
then resumes the pieces where they stopped (their tokens and KV cache untouched). A short clip sent while
a 10-minute file decodes so waits for at most one encoder pass and one decoder step of the file, never for a
whole batch of pieces (benchmarks/results/serve_fairness_cpu.md); the file advances whenever nothing short
waits, so it is never starved. This is preemption at step boundaries, not vLLM's iteration-level batching
(sequences joining a running batch): a Whisper batch's encoder pass is shared by its clips and the lean
loop's KV cache is one tensor per batch, so a late clip joining would need its own encoder pass spliced
in; a short request is a handful of steps, and running it whole between two steps of the pieces gives the
same bound with no change to the decoding loops. A batch of pieces whose callers have all gone (timed out
or hung up) is abandoned at its next step. Under CUDA graphs (the static decoder owns its buffers) the
worker does not yield inside a batch.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.constants import WINDOW_SAMPLES
from mkdeploy.lean.greedy import DecodeCancelled, between_steps
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import Transcription
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
    background: bool = False
    queued_at: float = field(default_factory=time.monotonic)

    def group_key(self) -> tuple:
        # one decode call takes one set of options; long-form audio (> 30 s) is decoded window by window
        # with timestamps, so it never shares a call with short clips (that would force timestamps on them)
        return (tuple(asdict(self.options).items()), len(self.audio) > WINDOW_SAMPLES)


class Batcher:
    """Collects requests into batches and decodes them on a worker thread.

    Args:
        decode: the model call (:meth:`mkdeploy.transcription.runtime.WhisperTranscriber.transcribe_arrays`).
        max_batch: most requests decoded together (1 turns batching off).
        max_wait_ms: how long the first waiting request waits for company.
        max_queue: most requests accepted and not yet answered (pieces of long uploads included).
        metrics: where queue depth, batch sizes and inference time go.
        piece_batch: most pieces of long uploads decoded in one call; a callable is asked at each batch
            (the server's answer depends on the device the model loaded on).
        yield_steps: whether a batch of pieces yields to waiting short requests at each decoder step; a
            callable is asked at each batch (False under CUDA graphs).
    """

    _STOP = object()

    def __init__(
        self,
        decode: DecodeFn,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: Metrics,
        piece_batch: int | Callable[[], int] = 1,
        yield_steps: bool | Callable[[], bool] = True,
    ):
        self.decode, self.max_batch, self.max_wait = decode, max(1, max_batch), max(0.0, max_wait_ms) / 1000
        self.max_queue, self.metrics = max_queue, metrics
        self._piece_batch, self._yield_steps = piece_batch, yield_steps
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mkd-batcher", daemon=True)
        # held by the worker thread only: jobs taken off the queue, not yet decoded
        self._short: deque[_Job] = deque()
        self._pieces: deque[_Job] = deque()
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        self._queue.put(self._STOP)
        self._thread.join()

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def piece_batch(self) -> int:
        n = self._piece_batch() if callable(self._piece_batch) else self._piece_batch
        return max(1, n)

    async def submit(self, audio: np.ndarray, options: TranscriptionOptions, background: bool = False) -> Transcription:
        """Queue one clip and wait for its transcription.

        Args:
            audio: 16 kHz mono samples.
            options: how to decode it (requests with different options never share a call).
            background: a piece of a long upload (see the module's docstring).

        Raises:
            QueueFull: ``max_queue`` requests are already waiting or decoding.
        """
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull
            self._pending += 1
            self.metrics.queue_depth.set(self._pending)
        loop = asyncio.get_running_loop()
        job = _Job(audio, options, loop.create_future(), loop, background)
        self._queue.put(job)
        try:
            return await job.future
        finally:
            with self._lock:
                self._pending -= 1
                self.metrics.queue_depth.set(self._pending)

    # -- worker thread -------------------------------------------------------------------------
    def _run(self) -> None:
        last_pieces = False
        while True:
            if not (self._short or self._pieces):
                if self._stopping:
                    return
                self._hold(self._queue.get())
            self._collect()
            # short requests and pieces take turns, so neither waits behind all of the other
            pieces = bool(self._pieces) and (not self._short or not last_pieces)
            batch = self._take(self._pieces, self.piece_batch) if pieces else self._take(self._short, self.max_batch)
            last_pieces = pieces
            yields = pieces and (self._yield_steps() if callable(self._yield_steps) else self._yield_steps)
            for group in _groups(batch):
                if yields:
                    with between_steps(self._between_steps(group)):
                        self._decode_group(group)
                else:
                    self._decode_group(group)

    def _between_steps(self, running: list[_Job]) -> Callable[[], None]:
        """The hook a batch of pieces runs before each decoder step: short requests waiting now are decoded
        (one batch of them: the pieces then take at least one step before the next, so a stream of short
        requests slows the file but never stops it); a batch whose callers are all gone is abandoned."""

        def hook() -> None:
            self._drain()
            if self._short:
                with between_steps(None):  # what the hook decodes does not yield in turn
                    for group in _groups(self._take(self._short, self.max_batch)):
                        self._decode_group(group)
            if all(j.future.cancelled() for j in running):
                raise DecodeCancelled

        return hook

    def _hold(self, job) -> None:
        """Put a job taken off the queue in its line (the stop signal sets ``_stopping``)."""
        if job is self._STOP:
            self._stopping = True
        else:
            (self._pieces if job.background else self._short).append(job)

    def _drain(self) -> None:
        """Take what has arrived, without waiting."""
        while True:
            try:
                self._hold(self._queue.get_nowait())
            except queue.Empty:
                return

    def _collect(self) -> None:
        """Take what has arrived; while the next batch has room, wait up to ``max_wait`` for company (not
        after the stop signal: what was queued before it is still decoded)."""
        deadline = time.monotonic() + self.max_wait
        while not self._stopping:
            full = len(self._short) >= self.max_batch or (not self._short and len(self._pieces) >= self.piece_batch)
            left = 0.0 if full else max(0.0, deadline - time.monotonic())
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            self._hold(job)

    def _take(self, line: deque[_Job], n: int) -> list[_Job]:
        """Up to ``n`` jobs off the front of ``line``, skipping callers that timed out or hung up (counted)."""
        batch: list[_Job] = []
        while line and len(batch) < n:
            job = line.popleft()
            if job.future.cancelled():
                self.metrics.cancelled.inc()
            else:
                batch.append(job)
        return batch

    def _decode_group(self, group: list[_Job]) -> None:
        self.metrics.batch_size.observe(len(group))
        options = replace(group[0].options, batch_size=len(group))
        t0 = time.perf_counter()
        try:
            results = self.decode([j.audio for j in group], options)
        except DecodeCancelled:  # every caller of the batch is gone: nobody to answer
            self.metrics.cancelled.inc(len(group))
            return
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
