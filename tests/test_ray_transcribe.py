"""Corpus transcription on a local Ray instance (2 CPUs): two actors give exactly the single-process
transcripts, one row per input; a re-run rewrites only a missing shard; an actor whose process dies
mid-batch still leaves every row exactly once. Real tiny.en on Piper speech, plus a silent and a broken file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ray = pytest.importorskip("ray", reason="the [ray] extra")

from mkdeploy.data import Utterance, load_manifest, write_manifest  # noqa: E402
from mkdeploy.distributed.cluster import connect  # noqa: E402
from mkdeploy.distributed.config import RayConfig  # noqa: E402
from mkdeploy.distributed.transcribe import ModelSpec, read_shards, transcribe_on_ray  # noqa: E402
from mkdeploy.testing.faults import FaultInjection  # noqa: E402
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber  # noqa: E402

pytestmark = pytest.mark.integration

OPTIONS = TranscriptionOptions(batch_size=2)


@pytest.fixture(scope="module")
def local_ray():
    connect(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(speech_clips, tmp_path_factory) -> Path:
    """Eight inputs: the four Piper clips, the same four sped up by resampling, a silent file and a
    file that is not audio (its row must carry the error, not vanish)."""
    d = tmp_path_factory.mktemp("ray_corpus")
    rows = []
    for p, text in speech_clips:
        rows.append(Utterance(p.name, p, text))
        audio, sr = sf.read(p, dtype="float32")
        fast = d / f"fast_{p.name}"
        sf.write(fast, audio, int(sr * 1.15))  # played faster: same words, another clip
        rows.append(Utterance(fast.name, fast, text))
    sf.write(d / "silence.wav", np.zeros(16000, np.float32), 16000)
    (d / "broken.wav").write_bytes(b"not a wav file at all")
    rows += [Utterance("silence.wav", d / "silence.wav"), Utterance("broken.wav", d / "broken.wav")]
    return write_manifest(d / "manifest.jsonl", rows)


def single_process(model: Path, manifest: Path) -> dict[str, str]:
    tr = WhisperTranscriber.from_pretrained(model, "torch", "cpu")
    results, failures = tr.transcribe_files([r.audio for r in load_manifest(manifest)], OPTIONS)
    assert len(failures) == 1 and "broken.wav" in failures[0].path
    return {Path(t.path).name: t.text for t in results}


def test_two_actors_match_single_process_and_rerun_rewrites_one_shard(local_ray, tiny_en_teacher, corpus, tmp_path):
    rows = load_manifest(corpus)
    model = ModelSpec(str(tiny_en_teacher), "torch", "cpu")
    config = RayConfig(actors=2, actor_cpus=1)
    out = tmp_path / "shards"
    job = transcribe_on_ray(rows, model, OPTIONS, out, config, shard_size=4)
    assert [p.name for p in job.shards] == [f"shard-0000{k}.jsonl" for k in range(3)]  # 4 + 4 + 2 rows
    assert job.written == job.shards and job.rows == 10
    got = read_shards(out)
    assert [r["id"] for r in got] == [r.id for r in rows]  # one row per input, in manifest order
    want = single_process(tiny_en_teacher, corpus)
    texts = {Path(r["audio"]).name: r["text"] for r in got if "error" not in r}
    assert texts == want
    assert texts["clip0.wav"].strip().lower().startswith("the quick brown fox")
    by_id = {r["id"]: r for r in got}
    assert by_id["silence.wav"]["gate"] == "silence" and by_id["silence.wav"]["text"] == ""
    assert "broken.wav" in by_id["broken.wav"]["error"] and by_id["broken.wav"]["text"] is None
    assert all(r["model"] == tiny_en_teacher.name and r["duration"] >= 0 for r in got)
    assert by_id["clip0.wav"]["segments"] and by_id["clip0.wav"]["segments"][0]["end"] > 0

    # a re-run after removing one shard writes that shard only
    before = {p: p.stat().st_mtime_ns for p in job.shards}
    job.shards[1].unlink()
    again = transcribe_on_ray(rows, model, OPTIONS, out, config, shard_size=4)
    kept = [p for p in job.shards if p != job.shards[1]]
    assert again.written == [job.shards[1]] and again.skipped == kept and again.rows == 4
    assert all(p.stat().st_mtime_ns == before[p] for p in kept)
    assert read_shards(out) == got

    # nothing to do: no Ray work at all
    idle = transcribe_on_ray(rows, model, OPTIONS, out, config, shard_size=4)
    assert idle.written == [] and idle.rows == 0


def test_killed_actor_still_yields_every_row_once(local_ray, tiny_en_teacher, corpus, tmp_path):
    rows = load_manifest(corpus)
    marker = tmp_path / "crashed"
    job = transcribe_on_ray(
        rows,
        ModelSpec(str(tiny_en_teacher), "torch", "cpu"),
        OPTIONS,
        tmp_path / "shards",
        RayConfig(actors=2, actor_cpus=1),
        shard_size=4,
        before_batch=FaultInjection(index=5, marker=str(marker)),
    )
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # an actor process did die
    got = read_shards(tmp_path / "shards")
    assert [r["id"] for r in got] == [r.id for r in rows]
    assert sum(len(p.read_text().splitlines()) for p in job.shards) == len(rows)


def test_another_job_in_the_folder_is_refused_without_force(local_ray, tiny_model_dir, corpus, tmp_path):
    from mkdeploy.errors import OutputExistsError

    rows = load_manifest(corpus)[:2]
    out = tmp_path / "shards"
    config = RayConfig(actors=1, actor_cpus=1)
    transcribe_on_ray(rows, ModelSpec(str(tiny_model_dir), "torch", "cpu"), OPTIONS, out, config, shard_size=2)
    other = TranscriptionOptions(batch_size=2, return_timestamps=False)
    with pytest.raises(OutputExistsError, match="another job"):
        transcribe_on_ray(rows, ModelSpec(str(tiny_model_dir), "torch", "cpu"), other, out, config, shard_size=2)
    job = transcribe_on_ray(
        rows, ModelSpec(str(tiny_model_dir), "torch", "cpu"), other, out, config, shard_size=2, force=True
    )
    assert job.written and json.loads((out / "job.json").read_text())["options"]["return_timestamps"] is False


def test_cli_transcribes_a_manifest_on_ray(local_ray, tiny_model_dir, corpus, tmp_path):
    from typer.testing import CliRunner

    from mkdeploy.cli.main import app

    runner = CliRunner()
    out = tmp_path / "shards"
    args = [
        "transcribe",
        str(tiny_model_dir),
        str(corpus),
        "--ray",
        "--actors",
        "1",
        "--shard-size",
        "4",
        "-o",
        str(out),
        "--batch-size",
        "2",
    ]
    r = runner.invoke(app, args + ["--device", "cpu", "--no-timestamps"])
    assert r.exit_code == 0, r.output
    assert "10 transcribed" in r.output and "3 shards written, 0 already done" in r.output
    assert len(read_shards(out)) == 10
    r = runner.invoke(app, args + ["--device", "cpu", "--no-timestamps"])
    assert r.exit_code == 0 and "0 transcribed" in r.output and "3 already done" in r.output
    r = runner.invoke(app, args + ["--device", "cpu"])  # other options: the folder holds another job
    assert r.exit_code == 2 and "another job" in r.output and "--force" in r.output
    r = runner.invoke(app, args[:-2] + ["--batch-size", "8"])  # 4 is not a multiple of 8
    assert r.exit_code == 2 and "must be a multiple of --batch-size 8" in r.output, r.output
    r = runner.invoke(app, ["transcribe", str(tiny_model_dir), str(corpus), str(corpus), "--ray", "-o", str(out)])
    assert r.exit_code == 2 and "one manifest" in r.output, r.output
