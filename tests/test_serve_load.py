"""The load generator against a real `mkd serve` on loopback (tiny.en): every request counted, latencies
ordered, audio seconds add up."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra")

from mkdeploy.audio import reference_clips  # noqa: E402
from mkdeploy.testing.load import run_load  # noqa: E402

pytestmark = pytest.mark.integration


def test_run_load_counts_every_request(tiny_en_teacher, tmp_path):
    from test_serve import Server

    s = Server(tiny_en_teacher, "--max-batch", "4", log=tmp_path / "load.log")
    try:
        clips = [a for a, _ in reference_clips()]
        r = run_load(s.url, clips, concurrency=3, requests=6)
        bad = run_load(s.url, clips, concurrency=2, requests=2, model="no-such-model")
    finally:
        assert s.stop() == 0
    assert (r.requests, r.errors, r.concurrency) == (6, 0, 3)
    assert 0 < r.p50_ms <= r.p95_ms and r.requests_per_s > 0
    seconds = sum(len(a) for a in clips) / 16000 * 3  # six requests over two clips
    assert r.audio_s_per_s * r.wall_s == pytest.approx(seconds, rel=0.02)
    assert (bad.requests, bad.errors, bad.audio_s_per_s) == (2, 2, 0.0)
