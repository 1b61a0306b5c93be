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
from mkdeploy.serve.batcher import Batcher, QueueFull  # noqa: E402
from mkdeploy.serve.metrics import Metrics  # noqa: E402
from mkdeploy.transcription.runtime import TranscriptionOptions  # noqa: E402


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


class SteppedDecoder:
    """A decode whose pieces of long uploads (first sample >= 100) take ``steps`` counted decoder steps, each
    after :func:`mkdeploy.transcription.decoding.step_boundary` as the real loops call it; a short clip is one event.
    ``pause_at``: (piece, step) after which the decoder waits for ``resume`` (the test acts meanwhile)."""

    def __init__(self, steps: int = 6, pause_at: tuple[int, int] | None = None):
        self.steps, self.pause_at = steps, pause_at
        self.events: list[str] = []
        self.paused, self.resume = threading.Event(), threading.Event()

    def __call__(self, audios, options):
        from mkdeploy.transcription.decoding import step_boundary

        ids = [int(a[0]) for a in audios]
        if ids[0] < 100:
            self.events.append("short " + ",".join(map(str, ids)))
        else:
            self.events.append(f"encode {ids}")
            for k in range(self.steps):
                step_boundary()
                self.events.append(f"step {k} of {ids}")
                if self.pause_at == (ids[0], k):
                    self.paused.set()
                    self.resume.wait(10)
        return [Transcription("", f"clip {i}", [], len(a) / 16000) for i, a in zip(ids, audios)]


def _pieces_then_short(dec: SteppedDecoder, yield_steps: bool):
    """Three pieces of a long upload, and a short clip sent while piece 100 is paused after its step 2."""
    b = Batcher(
        dec, max_batch=8, max_wait_ms=0, max_queue=64, metrics=Metrics(), piece_batch=1, yield_steps=yield_steps
    )
    opts = TranscriptionOptions()

    async def main():
        pieces = [asyncio.ensure_future(b.submit(_clip(100 + i), opts, background=True)) for i in range(3)]
        await asyncio.get_running_loop().run_in_executor(None, dec.paused.wait, 10)
        short = asyncio.ensure_future(b.submit(_clip(1), opts))
        await asyncio.sleep(0)  # submit has queued the clip: the worker may now resume
        dec.resume.set()
        return await short, await asyncio.gather(*pieces)

    return _run(b, main())


def test_a_short_clip_waits_for_one_decoder_step_of_a_long_upload_not_its_batch():
    """A short clip sent while a piece of a long upload decodes runs at the piece's next step boundary (one
    step after it arrived), the piece then resumes where it stopped, and every piece of the file finishes
    with all its steps. Without yielding (--no-yield-steps) the same clip waits for the whole piece."""
    dec = SteppedDecoder(pause_at=(100, 2))
    short, pieces = _pieces_then_short(dec, yield_steps=True)
    assert short.text == "clip 1" and [p.text for p in pieces] == ["clip 100", "clip 101", "clip 102"]
    e = dec.events
    assert e.index("short 1") == e.index("step 2 of [100]") + 1  # within one step
    assert e[e.index("short 1") + 1] == "step 3 of [100]"  # the piece resumed, not restarted
    assert all(f"step {k} of [{p}]" in e for p in (100, 101, 102) for k in range(6))
    assert e.count("encode [100]") == 1

    dec = SteppedDecoder(pause_at=(100, 2))
    _pieces_then_short(dec, yield_steps=False)
    assert dec.events.index("short 1") == dec.events.index("step 5 of [100]") + 1  # the whole piece first


def test_a_long_upload_whose_caller_left_stops_at_the_next_step():
    """When the caller of a long upload goes (a hang-up or a timeout cancels its waits), the piece in the
    decoder is abandoned at its next step boundary and its queued pieces never start; a short request
    sent next is decoded at once, and the metric counts the cancelled pieces."""
    dec = SteppedDecoder(steps=50, pause_at=(100, 1))
    metrics = Metrics()
    b = Batcher(dec, max_batch=8, max_wait_ms=0, max_queue=64, metrics=metrics, piece_batch=1)
    opts = TranscriptionOptions()

    async def main():
        pieces = [asyncio.ensure_future(b.submit(_clip(100 + i), opts, background=True)) for i in range(4)]
        await asyncio.get_running_loop().run_in_executor(None, dec.paused.wait, 10)
        for p in pieces:
            p.cancel()  # what the router does when the caller hangs up or its deadline passes
        await asyncio.sleep(0)
        dec.resume.set()
        return await b.submit(_clip(7), opts)

    assert _run(b, main()).text == "clip 7"
    e = dec.events
    assert "step 2 of [100]" not in e and not any("[101]" in x or "[102]" in x or "[103]" in x for x in e)
    assert e[-1] == "short 7"
    assert metrics.cancelled._value.get() == 4  # the abandoned piece and the three never started
