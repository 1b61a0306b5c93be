"""`mkd serve` end to end: real servers on loopback (subprocesses on free ports), the official ``openai``
SDK and raw HTTP; no mock of the server. The base teacher answers the SDK (issue 15's acceptance); the
queue, timeout, drain and soak tests use the faster tiny.en."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from signals import noise_clips

pytest.importorskip("fastapi", reason="the [serve] extra")
openai = pytest.importorskip("openai", reason="the [test] extra")
httpx = pytest.importorskip("httpx")

from mkdeploy.evaluate import error_rates  # noqa: E402
from mkdeploy.testing.load import ServerProcess, wav_bytes  # noqa: E402

pytestmark = pytest.mark.integration

KEY = "test-key"
MORE_SENTENCES = [
    "Seven ships sailed north before the winter storms arrived.",
    "We will need more coffee before the meeting starts.",
    "The train to the city leaves every hour on weekdays.",
    "She bought fresh bread and a bag of apples at the market.",
    "Please close the window when you leave the room.",
]


class Server(ServerProcess):
    """A `mkd serve` subprocess on 127.0.0.1 with the SDK client and metrics the tests read."""

    def client(self, key: str = KEY, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120, **kw)

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture(scope="module")
def clips(speech_clips) -> list[tuple[bytes, str]]:
    """Eight distinct clean sentences, Piper's joe voice: three shared ones (not the tongue twister, which
    base mishears as "Gcell C-shells") and five more."""
    from mkdeploy.demo.synthesis import Voice, synthesize

    out = [(p.read_bytes(), t) for p, t in speech_clips if "shells" not in t]
    out += [(wav_bytes(synthesize(t, Voice("piper", "joe"))), t) for t in MORE_SENTENCES]
    return out


def _noises() -> dict[str, bytes]:
    return {
        **{k: wav_bytes(v) for k, v in noise_clips().items()},
        "silence": wav_bytes(np.zeros(3 * 16000, np.float32)),
    }


@pytest.fixture(scope="module")
def base_server(base_teacher, tmp_path_factory):
    s = Server(
        base_teacher, "--api-key", KEY, "--max-upload-mb", "1", "--max-audio-seconds", "600", "--max-wait-ms", "100",
        log=tmp_path_factory.mktemp("serve") / "base.log",
    )  # fmt: skip
    yield s
    assert s.stop() == 0


def test_sdk_gets_every_response_format(base_server, clips):
    audio, text = clips[0]
    client = base_server.client()
    model = Path(base_server.proc.args[4]).name
    js = client.audio.transcriptions.create(file=("a.wav", audio), model=model)
    assert error_rates([text], [js.text]).wer <= 0.05
    plain = client.audio.transcriptions.create(file=("a.wav", audio), model="whisper-1", response_format="text")
    assert plain.strip() == js.text
    srt = client.audio.transcriptions.create(file=("a.wav", audio), model=model, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:0") and js.text in srt
    vtt = client.audio.transcriptions.create(file=("a.wav", audio), model=model, response_format="vtt")
    assert vtt.startswith("WEBVTT") and "-->" in vtt
    verbose = client.audio.transcriptions.create(
        file=("a.wav", audio), model=model, response_format="verbose_json", timestamp_granularities=["segment"]
    )
    assert verbose.text == js.text and verbose.language == "english"  # detected: no language was sent
    assert abs(verbose.duration - sf.info(io.BytesIO(audio)).duration) < 0.01
    seg = verbose.segments[0]
    assert seg.start == 0.0 and seg.end > 1.0 and seg.no_speech_prob < 0.5 and seg.avg_logprob > -1.0
    assert [m.id for m in client.models.list().data] == [model]


def test_eight_concurrent_callers_each_get_their_own_text(base_server, clips):
    client = base_server.client()
    batches_before = base_server.metric("mkd_batch_size_count")

    def call(i: int) -> str:
        return client.audio.transcriptions.create(file=(f"{i}.wav", clips[i][0]), model="whisper-1").text

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(call, range(8)))
    refs = [t for _, t in clips]
    assert error_rates(refs, texts).wer <= 0.05
    for i, hyp in enumerate(texts):  # each caller's text is nearest its own sentence
        assert min(range(8), key=lambda j: error_rates([refs[j]], [hyp]).wer) == i
    assert base_server.metric("mkd_batch_size_count") - batches_before < 8  # decoded in shared batches


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(base_server, clips):
    client = base_server.client()
    with pytest.raises(openai.BadRequestError, match="cannot decode audio"):
        client.audio.transcriptions.create(file=("notes.txt", b"this is not audio " * 100), model="whisper-1")
    with pytest.raises(openai.APIStatusError) as big:
        client.audio.transcriptions.create(file=("big.wav", b"\0" * 1_200_000), model="whisper-1")
    assert big.value.status_code == 413 and "limit" in big.value.message
    # under the byte limit, over the duration limit: 20 minutes of digital silence in ~100 kB of FLAC
    flac = io.BytesIO()
    sf.write(flac, np.zeros(8000 * 1200, np.int16), 8000, format="FLAC", subtype="PCM_16")
    with pytest.raises(openai.APIStatusError) as long:
        client.audio.transcriptions.create(file=("long.flac", flac.getvalue()), model="whisper-1")
    assert long.value.status_code == 413 and "long.flac: 1200 s of audio is over the 600 s limit" in long.value.message
    with pytest.raises(openai.AuthenticationError):
        base_server.client(key="wrong").audio.transcriptions.create(file=("a.wav", clips[0][0]), model="whisper-1")
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(file=("a.wav", clips[0][0]), model="large-v9")
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(file=("a.wav", clips[0][0]), model="whisper-1", response_format="xml")
    assert client.audio.transcriptions.create(file=("a.wav", clips[1][0]), model="whisper-1").text
    assert base_server.metric('mkd_errors_total{kind="bad_audio"}') >= 1
    assert base_server.metric('mkd_errors_total{kind="too_large"}') >= 1


def test_translations_and_detected_language(base_server, tiny_en_server_url):
    """German speech: verbose_json names the language detected; /v1/audio/translations answers in English;
    an English-only model refuses to translate with a 400 and keeps serving."""
    from mkdeploy.demo.synthesis import Voice, synthesize

    german = wav_bytes(synthesize("Guten Morgen, ich wohne seit zehn Jahren in Berlin.", Voice("espeak-ng", "de")))
    client = base_server.client()
    verbose = client.audio.transcriptions.create(
        file=("de.wav", german), model="whisper-1", response_format="verbose_json"
    )
    assert verbose.language == "german" and "Berlin" in verbose.text and "Morgen" in verbose.text
    english = client.audio.translations.create(file=("de.wav", german), model="whisper-1")
    assert "Good morning" in english.text and "Berlin" in english.text
    vt = client.audio.translations.create(file=("de.wav", german), model="whisper-1", response_format="verbose_json")
    assert vt.task == "translate" and vt.language == "german" and vt.text == english.text
    refused = httpx.post(
        f"{tiny_en_server_url}/v1/audio/translations", files={"file": ("de.wav", german)},
        data={"model": "whisper-1"}, timeout=60,
    )  # fmt: skip
    assert refused.status_code == 400 and "English-only" in refused.json()["error"]["message"]
    assert _post(tiny_en_server_url, german).status_code == 200


def test_noise_hum_and_silence_give_empty_text(base_server):
    client = base_server.client()
    for name, audio in _noises().items():
        assert client.audio.transcriptions.create(file=(f"{name}.wav", audio), model="whisper-1").text == "", name


@pytest.fixture(scope="module")
def small_server(tiny_en_teacher, tmp_path_factory):
    """tiny.en, one request at a time, two accepted at most, 6 s per request."""
    s = Server(
        tiny_en_teacher, "--max-batch", "1", "--max-queue", "2", "--request-timeout", "6",
        log=tmp_path_factory.mktemp("serve") / "small.log",
    )  # fmt: skip
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def tiny_en_server_url(small_server) -> str:
    return small_server.url


def _post(url: str, audio: bytes, **fields) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": ("a.wav", audio)},
        data={"model": "whisper-1", **fields},
        timeout=60,
    )


def test_full_queue_gets_503_with_retry_after(small_server, clips):
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: _post(small_server.url, clips[i][0]), range(6)))
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"


def test_request_over_the_timeout_gets_504(small_server, clips):
    # ~210 s: more than even a fast 2-core machine decodes within the 6 s timeout (80 s was not, on an
    # AVX-512 Xeon, which answered 200); only the pieces already in flight run on after the 504
    long = np.concatenate([sf.read(io.BytesIO(a), dtype="float32")[0] for a, _ in clips] * 8)
    r = _post(small_server.url, wav_bytes(long))
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    # its pieces are withdrawn and the one in the decoder is abandoned at its next step: counted, and the
    # server answers the next caller
    deadline = time.monotonic() + 60
    while small_server.metric("mkd_cancelled_clips_total") < 1:
        assert time.monotonic() < deadline, "the timed-out upload was never cancelled"
        time.sleep(0.1)
    assert _post(small_server.url, clips[0][0]).status_code == 200


def test_sigterm_finishes_in_flight_requests_then_exits_0(tiny_en_teacher, clips, tmp_path):
    s = Server(tiny_en_teacher, "--max-wait-ms", "300", log=tmp_path / "drain.log")
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_post, s.url, clips[i][0]) for i in range(3)]
        deadline = time.monotonic() + 10
        while s.metric("mkd_queue_depth") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        s.proc.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    assert [r.status_code for r in answers] == [200] * 3
    assert all(r.json()["text"] for r in answers)
    assert s.proc.wait(60) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.url}/health", timeout=2)


def test_cli_refuses_a_missing_model_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mkdeploy.cli.main", "serve", str(tmp_path / "nope")],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_200_mixed_requests_each_get_the_status_they_should(tiny_en_teacher, clips, tmp_path):
    """Good, bad, oversized, noise and unauthorised requests, 8 at a time: no crash, no lost request,
    every status as specified, and the counters agree."""
    s = Server(
        tiny_en_teacher, "--api-key", KEY, "--max-upload-mb", "1", "--max-queue", "64", log=tmp_path / "soak.log"
    )
    noises = list(_noises().values())
    kinds = ["good", "good", "good", "noise", "bad", "big", "key", "format"]
    expected = {"good": 200, "noise": 200, "bad": 400, "big": 413, "key": 401, "format": 400}

    def call(i: int) -> tuple[str, int, str, int]:
        kind = kinds[i % len(kinds)]
        audio, fields, headers = clips[i % 8][0], {}, {"Authorization": f"Bearer {KEY}"}
        if kind == "noise":
            audio = noises[i % len(noises)]
        elif kind == "bad":
            audio = b"<html>not audio</html>" * 10
        elif kind == "big":
            audio = b"\0" * 1_100_000
        elif kind == "key":
            headers = {"Authorization": "Bearer nope"}
        elif kind == "format":
            fields = {"response_format": "docx"}
        r = httpx.post(
            f"{s.url}/v1/audio/transcriptions",
            files={"file": ("a.wav", audio)},
            data={"model": "whisper-1", **fields},
            headers=headers,
            timeout=120,
        )
        text = r.json().get("text", "") if r.status_code == 200 else r.json()["error"]["message"]
        return kind, r.status_code, text, i

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(200)))
        assert len(answers) == 200
        for kind, status, text, i in answers:
            assert status == expected[kind], (kind, status, text)
            if kind == "good":
                assert error_rates([clips[i % 8][1]], [text]).wer <= 0.2, (clips[i % 8][1], text)
            if kind == "noise":
                assert text == ""
        assert httpx.get(f"{s.url}/health").status_code == 200
        assert s.metric("mkd_requests_total") == 200
    finally:
        assert s.stop() == 0


def test_packed_batches_give_each_caller_its_own_words(tiny_en_teacher, clips, tmp_path):
    """--pack: eight callers' clips share encoder windows; each still gets its own sentence."""
    s = Server(tiny_en_teacher, "--pack", "--max-batch", "8", "--max-wait-ms", "300", log=tmp_path / "pack.log")
    try:
        client = s.client()

        def call(i: int) -> str:
            return client.audio.transcriptions.create(file=(f"{i}.wav", clips[i][0]), model="whisper-1").text

        with ThreadPoolExecutor(8) as pool:
            texts = list(pool.map(call, range(8)))
        assert s.metric("mkd_batch_size_sum") - s.metric("mkd_batch_size_count") > 0  # some batch held several
    finally:
        assert s.stop() == 0
    refs = [t for _, t in clips]
    assert error_rates(refs, texts).wer <= 0.1
    for i, hyp in enumerate(texts):
        assert min(range(8), key=lambda j: error_rates([refs[j]], [hyp]).wer) == i


def test_word_timestamps_in_verbose_json(base_server, clips):
    """``timestamp_granularities[]=word`` as the openai SDK sends it: words with times inside the clip, in
    order, spelling the transcript; alone, segments are left out (OpenAI's shape); with other formats a 400."""
    audio, text = clips[0]
    client = base_server.client()
    both = client.audio.transcriptions.create(
        file=("a.wav", audio), model="whisper-1", response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )  # fmt: skip
    words = both.words
    assert words and both.segments
    assert " ".join(w.word for w in words) == both.text.strip()
    times = [t for w in words for t in (w.start, w.end)]
    assert times == sorted(times) and 0.0 <= times[0] and times[-1] <= both.duration + 0.05
    only = client.audio.transcriptions.create(
        file=("a.wav", audio), model="whisper-1", response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert [w.word for w in only.words] == [w.word for w in words] and not only.segments
    with pytest.raises(openai.BadRequestError, match="verbose_json"):
        client.audio.transcriptions.create(
            file=("a.wav", audio), model="whisper-1", response_format="json", timestamp_granularities=["word"]
        )


@pytest.fixture(scope="module")
def piece_server(tiny_en_teacher, tmp_path_factory):
    """tiny.en, one clip per batch (so the order in which pieces and clips are decoded shows), 120 s limit."""
    s = Server(
        tiny_en_teacher, "--max-batch", "1", "--request-timeout", "120",
        log=tmp_path_factory.mktemp("serve") / "pieces.log",
    )  # fmt: skip
    yield s
    assert s.stop() == 0


def _long_audio(clips, times: int) -> np.ndarray:
    pause = np.zeros(16000, np.float32)
    return np.concatenate([x for a, _ in clips for x in (sf.read(io.BytesIO(a), dtype="float32")[0], pause)] * times)


def test_stream_sends_openai_text_events(piece_server, clips):
    """``stream=True`` through the openai SDK: a ``transcript.text.delta`` per piece of a long upload, then
    ``transcript.text.done`` whose text is the deltas joined and matches the unstreamed answer."""
    audio = wav_bytes(_long_audio(clips, 2))  # ~55 s: two pieces at least
    client = piece_server.client()
    events = list(client.audio.transcriptions.create(file=("long.wav", audio), model="whisper-1", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.delta") >= 2
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert deltas == events[-1].text
    plain = client.audio.transcriptions.create(file=("long.wav", audio), model="whisper-1").text
    assert plain == events[-1].text
    refs = " ".join(t for _, t in clips * 2)
    assert error_rates([refs], [plain]).wer <= 0.15
    with pytest.raises(openai.BadRequestError, match="cannot stream"):
        client.audio.transcriptions.create(
            file=("a.wav", clips[0][0]), model="whisper-1", stream=True, response_format="srt"
        )


def _until_queued(server: Server, timeout: float = 60) -> None:
    """Returns once the server holds a queued or decoding clip (a long upload's pieces)."""
    deadline = time.monotonic() + timeout
    while server.metric("mkd_queue_depth") < 1:
        assert time.monotonic() < deadline, "the upload never reached the queue"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def int8_piece_server(tiny_en_teacher, tmp_path_factory):
    """piece_server's flags on tiny.en's ONNX int8 export (mkd export's default int8)."""
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.en"
    export_onnx(tiny_en_teacher, out, ExportOptions(quantize="int8", validate=False))
    s = Server(
        out / "int8", "--max-batch", "1", "--request-timeout", "120",
        log=tmp_path_factory.mktemp("serve") / "pieces-int8.log",
    )  # fmt: skip
    yield s
    assert s.stop() == 0


@pytest.mark.parametrize("which", ["piece_server", "int8_piece_server"])
def test_a_short_clip_is_not_held_behind_a_long_upload(which, request, clips):
    """One request at a time (--max-batch 1), PyTorch and ONNX int8: a short clip sent once a long file's
    pieces are decoding is answered before the file (it runs between two decoder steps of a piece), and the
    file's transcript is the one it gets alone."""
    piece_server = request.getfixturevalue(which)
    long = wav_bytes(_long_audio(clips, 3))  # ~80 s
    alone = _post(piece_server.url, long, response_format="text").text
    finished: dict[str, float] = {}
    texts: dict[str, str] = {}

    def send(name: str, audio: bytes) -> int:
        r = _post(piece_server.url, audio, response_format="text")
        finished[name], texts[name] = time.monotonic(), r.text
        return r.status_code

    with ThreadPoolExecutor(2) as pool:
        f_long = pool.submit(send, "long", long)
        _until_queued(piece_server)
        f_short = pool.submit(send, "short", clips[0][0])
        assert f_short.result() == 200 and f_long.result() == 200
    assert finished["short"] < finished["long"]
    assert texts["long"] == alone


def test_a_caller_who_hangs_up_stops_its_long_upload(piece_server, clips):
    """A caller that disconnects while its long file decodes: the server withdraws the file's queued pieces
    and abandons the one in the decoder at its next step (counted in mkd_cancelled_clips_total), decodes
    far less than the file, and the next caller is answered."""
    long = _long_audio(clips, 8)  # ~210 s: about eight pieces
    cancelled = piece_server.metric("mkd_cancelled_clips_total")
    decoded = piece_server.metric("mkd_audio_seconds_total")
    with pytest.raises(httpx.ReadTimeout):  # the client hangs up 2 s after sending the file
        httpx.post(
            f"{piece_server.url}/v1/audio/transcriptions",
            files={"file": ("long.wav", wav_bytes(long))},
            data={"model": "whisper-1"},
            timeout=httpx.Timeout(60, read=2.0),
        )
    deadline = time.monotonic() + 60
    while piece_server.metric("mkd_cancelled_clips_total") == cancelled:
        assert time.monotonic() < deadline, "the abandoned upload was never cancelled"
        time.sleep(0.1)
    assert _post(piece_server.url, clips[0][0]).status_code == 200
    assert piece_server.metric("mkd_audio_seconds_total") - decoded < 0.5 * len(long) / 16000
