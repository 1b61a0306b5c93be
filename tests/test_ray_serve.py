"""`mkd serve --ray` end to end: a real `mkd serve MODEL --ray --replicas 2` subprocess (its own local Ray
instance on this machine's 2 CPUs) answers the official openai SDK, Ray Serve spreads requests over both
replicas, and SIGKILL on one replica's process fails none of the next requests. Real tiny.en, real speech."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytest.importorskip("ray", reason="the [ray] extra")
pytest.importorskip("fastapi", reason="the [serve] extra")
openai = pytest.importorskip("openai", reason="the [test] extra")

from mkdeploy.evaluate import error_rates  # noqa: E402
from mkdeploy.testing.load import ServerProcess  # noqa: E402

pytestmark = pytest.mark.integration


def _ask(client, audio: bytes) -> tuple[str, str]:
    """(text, the replica that answered)."""
    raw = client.audio.transcriptions.with_raw_response.create(model="tiny.en", file=("clip.wav", audio))
    return raw.parse().text, raw.headers["x-mkd-replica"]


def test_two_replicas_share_the_load_and_survive_a_killed_replica(tiny_en_teacher, speech_clips, tmp_path):
    server = ServerProcess(
        tiny_en_teacher, "--ray", "--replicas", "2", "--replica-cpus", "1", "--model-name", "tiny.en",
        log=tmp_path / "serve.log",
    )  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)
        # not the tongue twister, which Whisper hears as "G-cell C-shells" (as in test_serve.py)
        clips = [(p.read_bytes(), t) for p, t in speech_clips if "shells" not in t]
        seen: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while len(seen) < 2 and time.monotonic() < deadline:  # Ray Serve picks replicas at random
            for audio, text in clips:
                got, replica = _ask(client, audio)
                assert error_rates([text], [got]).wer < 0.2, (text, got)
                seen[replica] = seen.get(replica, 0) + 1
        assert len(seen) == 2, f"one replica answered everything: {seen}"

        victim = next(iter(seen))
        os.kill(int(victim.split("/")[-1]), signal.SIGKILL)
        answers = [_ask(client, audio) for audio, _ in clips + clips]  # none may fail
        assert all(error_rates([t], [got]).wer < 0.2 for (got, _), (_, t) in zip(answers, clips + clips))
        assert victim not in {replica for _, replica in answers}
    finally:
        assert server.stop(timeout=120) == 0, server.log_tail()
