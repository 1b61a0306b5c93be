"""Cross-request batching (mkdeploy/serve/batcher.py) with a recording decode function: who is batched
with whom, that each caller gets its own result, the queue bound, errors and timed-out callers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

pytest.importorskip("prometheus_client", reason="the [serve] extra")

from mkdeploy.results import Transcription  # noqa: E402
from mkdeploy.runtime import TranscriptionOptions  # noqa: E402
from mkdeploy.serve.batcher import Batcher, QueueFull  # noqa: E402
from mkdeploy.serve.metrics import Metrics  # noqa: E402


class Recorder:
    """Decodes a clip to the text of its first sample's value; remembers each call's size."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.calls: list[int] = []
        self.delay, self.gate = delay, gate

    def __call__(self, audios, options):
        if self.gate:
            self.gate.wait(10)
        time.sleep(self.delay)
        self.calls.append(len(audios))
        if any(a[0] < 0 for a in audios):
            raise RuntimeError("decoder blew up")
        return [Transcription("", f"clip {int(a[0])}", [], len(a) / 16000) for a in audios]


def _clip(i: int) -> np.ndarray:
    return np.full(1600, float(i), np.float32)


def _run(batcher: Batcher, coro):
    batcher.start()
    try:
        return asyncio.run(coro)
    finally:
        batcher.stop()


def test_concurrent_requests_are_batched_and_each_gets_its_own_result():
    rec = Recorder(delay=0.05)
    b = Batcher(rec, max_batch=8, max_wait_ms=200, max_queue=64, metrics=Metrics())
    opts = TranscriptionOptions()

    async def main():
        return await asyncio.gather(*(b.submit(_clip(i), opts) for i in range(8)))

    results = _run(b, main())
    assert [r.text for r in results] == [f"clip {i}" for i in range(8)]
    assert sum(rec.calls) == 8 and max(rec.calls) > 1  # batched across callers


def test_batching_off_decodes_one_at_a_time():
    rec = Recorder()
    b = Batcher(rec, max_batch=1, max_wait_ms=200, max_queue=64, metrics=Metrics())

    async def main():
        return await asyncio.gather(*(b.submit(_clip(i), TranscriptionOptions()) for i in range(4)))

    assert [r.text for r in _run(b, main())] == [f"clip {i}" for i in range(4)]
    assert rec.calls == [1, 1, 1, 1]


def test_different_options_never_share_a_decode_call():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, max_wait_ms=200, max_queue=64, metrics=Metrics())
    a, c = TranscriptionOptions(return_timestamps=False), TranscriptionOptions(return_timestamps=True)

    async def main():
        return await asyncio.gather(*(b.submit(_clip(i), a if i % 2 else c) for i in range(6)))

    assert [r.text for r in _run(b, main())] == [f"clip {i}" for i in range(6)]
    assert sorted(rec.calls) == [3, 3]


def test_full_queue_refuses_at_once_and_recovers():
    release = threading.Event()
    b = Batcher(Recorder(gate=release), max_batch=1, max_wait_ms=0, max_queue=2, metrics=Metrics())

    async def main():
        first = [asyncio.ensure_future(b.submit(_clip(i), TranscriptionOptions())) for i in range(2)]
        await asyncio.sleep(0.05)
        assert b.pending == 2
        with pytest.raises(QueueFull):
            await b.submit(_clip(9), TranscriptionOptions())
        release.set()
        done = await asyncio.gather(*first)
        after = await b.submit(_clip(3), TranscriptionOptions())  # room again
        return done, after

    done, after = _run(b, main())
    assert [r.text for r in done] == ["clip 0", "clip 1"] and after.text == "clip 3"
    assert b.pending == 0


def test_a_failing_batch_fails_its_callers_and_the_worker_goes_on():
    b = Batcher(Recorder(), max_batch=4, max_wait_ms=100, max_queue=64, metrics=Metrics())

    async def main():
        bad = await asyncio.gather(b.submit(_clip(-1), TranscriptionOptions()), return_exceptions=True)
        good = await b.submit(_clip(5), TranscriptionOptions())
        return bad, good

    bad, good = _run(b, main())
    assert isinstance(bad[0], RuntimeError) and good.text == "clip 5"


def test_a_caller_that_timed_out_is_not_decoded():
    release = threading.Event()
    rec = Recorder(gate=release)
    b = Batcher(rec, max_batch=1, max_wait_ms=0, max_queue=8, metrics=Metrics())

    async def main():
        busy = asyncio.ensure_future(b.submit(_clip(1), TranscriptionOptions()))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.submit(_clip(2), TranscriptionOptions()), 0.05)
        release.set()
        return await busy

    assert _run(b, main()).text == "clip 1"
    assert rec.calls == [1]  # the abandoned clip 2 was skipped


def test_short_requests_and_long_upload_pieces_take_turns():
    """Pieces of a long upload (background) are decoded ``piece_batch`` at a time, and a batch of short
    requests goes between two batches of pieces: the short clips sent after 12 pieces were queued are
    decoded second, not thirteenth, and the pieces are not starved by a stream of short clips."""
    release = threading.Event()
    order: list[str] = []

    def decode(audios, options):
        release.wait(10)
        order.append(",".join(("p" if a[0] >= 100 else "s") + str(int(a[0]) % 100) for a in audios))
        return [Transcription("", f"clip {int(a[0])}", [], len(a) / 16000) for a in audios]

    b = Batcher(decode, max_batch=4, max_wait_ms=0, max_queue=64, metrics=Metrics(), piece_batch=lambda: 2)
    opts = TranscriptionOptions()

    async def main():
        pieces = [asyncio.ensure_future(b.submit(_clip(100 + i), opts, background=True)) for i in range(12)]
        await asyncio.sleep(0.1)  # the first batch of pieces is in the decoder, held by the gate
        shorts = [asyncio.ensure_future(b.submit(_clip(i), opts)) for i in range(6)]
        await asyncio.sleep(0.1)
        release.set()
        return await asyncio.gather(*pieces), await asyncio.gather(*shorts)

    pieces, shorts = _run(b, main())
    assert [r.text for r in pieces] == [f"clip {100 + i}" for i in range(12)]
    assert [r.text for r in shorts] == [f"clip {i}" for i in range(6)]
    assert order == ["p0,p1", "s0,s1,s2,s3", "p2,p3", "s4,s5", "p4,p5", "p6,p7", "p8,p9", "p10,p11"]


def test_timed_out_pieces_leave_the_queue_without_a_decode():
    release = threading.Event()
    rec = Recorder(gate=release)
    b = Batcher(rec, max_batch=8, max_wait_ms=0, max_queue=64, metrics=Metrics(), piece_batch=1)

    async def main():
        busy = asyncio.ensure_future(b.submit(_clip(1), TranscriptionOptions()))
        await asyncio.sleep(0.05)
        gone = [b.submit(_clip(100 + i), TranscriptionOptions(), background=True) for i in range(5)]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*gone), 0.05)
        release.set()
        first = await busy
        return first, await b.submit(_clip(2), TranscriptionOptions())

    first, after = _run(b, main())
    assert (first.text, after.text) == ("clip 1", "clip 2")
    assert rec.calls == [1, 1]  # none of the five abandoned pieces reached the decoder
