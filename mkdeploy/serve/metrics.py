"""Prometheus metrics (prometheus_client), one registry per app so several servers in one process (tests)
keep their own counts. Names follow Prometheus' conventions: ``_total`` counters, ``_seconds`` units."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The server's counters, gauges and histograms.

    Attributes:
        requests: requests answered, by route and status code.
        errors: failed requests by kind (bad_audio, too_large, unauthorized, queue_full, timeout, ...).
        queue_depth: requests accepted and not yet answered.
        batch_size: requests decoded together, per batch.
        latency: request latency in seconds (transcriptions), from arrival to answer.
        inference: wall time of one batch's decoding.
        audio_seconds: seconds of audio transcribed.
        cancelled: queued clips (requests or pieces of long uploads) dropped, or abandoned between two
            decoder steps, because their caller timed out or hung up.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mkd_requests", "Requests answered.", ["route", "status"], registry=r)
        self.errors = Counter("mkd_errors", "Failed requests by kind.", ["kind"], registry=r)
        self.queue_depth = Gauge("mkd_queue_depth", "Requests accepted and not yet answered.", registry=r)
        self.batch_size = Histogram("mkd_batch_size", "Requests decoded together.", buckets=BATCH_BUCKETS, registry=r)
        self.latency = Histogram(
            "mkd_request_latency_seconds", "Transcription latency.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "mkd_batch_inference_seconds", "Decoding time of one batch.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.audio_seconds = Counter("mkd_audio_seconds", "Seconds of audio transcribed.", registry=r)
        self.cancelled = Counter(
            "mkd_cancelled_clips", "Clips dropped or abandoned mid-decode because their caller left.", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
