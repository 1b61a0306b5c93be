"""The Ray layer's logic without a Ray cluster: shard plans, the job record that guards a folder, the
autoscaling range, the Ray Serve application builder (and the KubeRay manifest that names it), and the CLI's
one-line errors before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.data import Utterance
from mkdeploy.distributed.config import RayConfig, RayServeConfig
from mkdeploy.distributed.transcribe import JOB_FILE, ModelSpec, job_record, plan, prepare_output
from mkdeploy.errors import MkdError, OutputExistsError
from mkdeploy.transcription.runtime import TranscriptionOptions

ROOT = Path(__file__).resolve().parents[1]


def _rows(n: int) -> list[Utterance]:
    return [Utterance(f"c{i}.wav", Path(f"/data/c{i}.wav")) for i in range(n)]


def test_plan_covers_every_input_once_in_order():
    shards = plan(_rows(10), 4)
    assert shards == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan(_rows(3), 64) == [[0, 1, 2]]


def test_job_record_guards_the_folder(tmp_path):
    rows, model = _rows(3), ModelSpec(Path("/models/tiny"))
    rec = job_record(rows, model, TranscriptionOptions(), 2)
    assert rec["model"]["path"] == "/models/tiny" and rec["inputs"] == 3 and rec["shard_size"] == 2
    out = tmp_path / "job"
    prepare_output(out, rec, force=False)
    (out / "shard-00000.jsonl").write_text("{}\n")
    prepare_output(out, rec, force=False)  # the same job continues: its shard stays
    assert (out / "shard-00000.jsonl").exists()
    other = job_record(rows[:2], model, TranscriptionOptions(), 2)  # other inputs
    with pytest.raises(OutputExistsError, match="another job"):
        prepare_output(out, other, force=False)
    prepare_output(out, other, force=True)
    assert not (out / "shard-00000.jsonl").exists() and json.loads((out / JOB_FILE).read_text()) == other
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a transcription job"):
        prepare_output(stray, rec, force=False)
    assert (stray / "notes.txt").read_text() == "mine"


def test_ray_configs_check_their_values():
    with pytest.raises(MkdError, match="--actors"):
        RayConfig(actors=0).check()
    assert RayServeConfig(autoscale="1:4").bounds() == (1, 4)
    assert RayServeConfig().bounds() is None
    for bad in ("4", "a:b", "3:1", "0:0"):
        with pytest.raises(MkdError, match="--autoscale"):
            RayServeConfig(autoscale=bad).bounds()


def test_build_app_types_string_args_and_sets_replicas_or_autoscaling():
    pytest.importorskip("ray", reason="the [ray] extra")
    from mkdeploy.distributed.serve import build_app

    d = build_app(
        {"model": "/m", "replicas": "3", "max_batch": "4", "vad": "false", "replica_cpus": "2"}
    )._bound_deployment
    assert d._deployment_config.num_replicas == 3
    assert d.ray_actor_options == {"num_cpus": 2.0, "num_gpus": 0.0}
    config = d.init_args[0]
    assert config.max_batch == 4 and config.vad is False and d._deployment_config.max_ongoing_requests == 64
    auto = build_app({"model": "/m", "autoscale": "1:3", "max_batch": 8})._bound_deployment._deployment_config
    assert (auto.autoscaling_config.min_replicas, auto.autoscaling_config.max_replicas) == (1, 3)
    assert auto.autoscaling_config.target_ongoing_requests == 8
    with pytest.raises(MkdError, match="unknown"):
        build_app({"model": "/m", "replica": 2})
    with pytest.raises(MkdError, match="'model' is required"):
        build_app({"replicas": 2})


def test_kuberay_manifest_names_a_buildable_application():
    pytest.importorskip("ray", reason="the [ray] extra")
    import importlib

    manifest = yaml.safe_load((ROOT / "docs" / "kuberay" / "rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    (application,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    module, name = application["import_path"].split(":")
    builder = getattr(importlib.import_module(module), name)
    d = builder(application["args"])._bound_deployment
    assert d.ray_actor_options["num_gpus"] == 1 and d.init_args[0].device == "cuda"


def test_cli_refuses_bad_ray_flags_before_starting_ray(tiny_model_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["serve", str(tiny_model_dir), "--ray", "--autoscale", "4"])
    assert r.exit_code == 2 and "--autoscale 4: give MIN:MAX" in r.output
    r = runner.invoke(app, ["transcribe", str(tiny_model_dir), str(tmp_path), str(tmp_path), "--ray"])
    assert r.exit_code == 2 and "one manifest" in r.output


def test_transcribe_files_batches_by_position(tiny_model_dir, speech_clips, tmp_path):
    """Batch k is inputs [k * B, (k + 1) * B) less the silent and unreadable ones, so a transcript depends
    only on its neighbours by position (what `mkd transcribe --ray` reproduces batch for batch)."""
    import numpy as np
    import soundfile as sf

    from mkdeploy.transcription.runtime import WhisperTranscriber

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"no audio")
    clips = [p for p, _ in speech_clips]
    again = tmp_path / "again.wav"
    again.write_bytes(clips[0].read_bytes())
    paths = [clips[0], silent, clips[1], clips[2], broken, clips[3], again]
    tr = WhisperTranscriber.from_pretrained(tiny_model_dir, "torch", "cpu")
    sizes = []
    real = tr.transcribe_arrays
    tr.transcribe_arrays = lambda audios, options: sizes.append(len(audios)) or real(audios, options)
    done, failures = tr.transcribe_files(paths, TranscriptionOptions(batch_size=2, return_timestamps=False))
    assert sizes == [1, 2, 1, 1]  # [0, silent] [1, 2] [broken, 3] [0]
    assert len(done) == 6 and len(failures) == 1 and [t.path for t in done][1] == str(silent)
