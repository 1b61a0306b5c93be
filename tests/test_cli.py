"""`mkd` end to end with typer's CliRunner on the tiny model, error paths included."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from mkdeploy.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_audio")
    rng = np.random.default_rng(3)
    for i in range(2):
        sf.write(d / f"c{i}.wav", rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    (d / "c0.txt").write_text("hello world")
    (d / "c1.txt").write_text("good morning")
    return d


def test_import_ct2_cli(tiny_ct2_dir, tmp_path):
    out = tmp_path / "hf"
    r = runner.invoke(app, ["import-ct2", str(tiny_ct2_dir), str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "model.safetensors").exists()
    r = runner.invoke(app, ["import-ct2", str(tiny_ct2_dir), str(out)])
    assert r.exit_code == 2 and "--force" in r.output and "Traceback" not in r.output
    assert runner.invoke(app, ["import-ct2", str(tiny_ct2_dir), str(out), "--force"]).exit_code == 0
    r = runner.invoke(app, ["import-ct2", "--from-package", "no-such-pkg", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown package" in r.output


def test_transcribe_cli_formats_and_bad_files(tiny_model_dir, clips, tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    args = [
        "transcribe",
        str(tiny_model_dir),
        str(clips / "c0.wav"),
        str(bad),
        str(clips / "c1.wav"),
        "-o",
        str(out),
        "-f",
        "json",
        "-f",
        "srt",
        "-f",
        "vtt",
        "-f",
        "txt",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output  # a bad input makes the run fail, after the good ones are done
    assert "bad.mp3" in r.output and "Traceback" not in r.output
    for stem in ("c0", "c1"):
        for ext in ("json", "srt", "vtt", "txt"):
            assert (out / f"{stem}.{ext}").exists()
    assert "text" in json.loads((out / "c0.json").read_text())
    r = runner.invoke(app, args[:4] + ["-o", str(out)])  # c0.txt exists now
    assert r.exit_code == 2 and "--force" in r.output


def test_transcribe_cli_errors(tiny_model_dir, tiny_ct2_dir, clips, tmp_path):
    r = runner.invoke(app, ["transcribe", str(tmp_path / "nomodel"), str(clips / "c0.wav")])
    assert r.exit_code == 2 and "no such model directory" in r.output
    r = runner.invoke(app, ["transcribe", str(tiny_ct2_dir), str(clips / "c0.wav"), "--backend", "onnx"])
    assert r.exit_code == 2 and "an export for another server" in r.output  # CTranslate2 runs it, not ONNX
    r = runner.invoke(app, ["transcribe", str(tiny_model_dir), str(clips / "c0.wav"), "-f", "docx"])
    assert r.exit_code == 2 and "--format docx" in r.output
    r = runner.invoke(app, ["transcribe", str(tiny_model_dir), str(tmp_path)])
    assert r.exit_code == 2 and "no audio files" in r.output


def test_eval_cli(tiny_model_dir, clips, tmp_path):
    out = tmp_path / "eval.json"
    r = runner.invoke(app, ["eval", str(tiny_model_dir), str(clips), "--output", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["wer"] > 0 and 0 <= data["cer"] and len(data["utterances"]) == 2
    assert "WER" in r.output
    r = runner.invoke(app, ["eval", str(tiny_model_dir), str(clips), "--output", str(out)])
    assert r.exit_code == 2 and "--force" in r.output


def test_recipe_options_come_from_the_dataclass():
    import dataclasses

    from mkdeploy.cli.common import dataclass_options, parse_dataclass_options
    from mkdeploy.distill.config import RecipeConfig

    res = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert res.exit_code == 0
    flat = [f.name for f in dataclasses.fields(RecipeConfig) if f.name not in ("encoder_pairs", "decoder_pairs")]
    for name in flat:
        assert "--" + name.replace("_", "-") in res.output, name
    assert "KD temperature" in res.output  # the field's own help text

    # a field added to the dataclass becomes an option with no other edit
    @dataclasses.dataclass
    class Extended(RecipeConfig):
        w_new: float = dataclasses.field(default=0.5, metadata={"help": "a new term"})

    names = [p.name for p in dataclass_options(Extended)]
    assert "w_new" in names and "encoder_pairs" not in names
    parsed = parse_dataclass_options(
        RecipeConfig, {"select_alphas": "0.5, 0.9", "lora_targets": "q_proj,v_proj", "lr": 1e-4, "seed": None}
    )
    assert parsed == {"select_alphas": [0.5, 0.9], "lora_targets": ["q_proj", "v_proj"], "lr": 1e-4}


def test_transcribe_options_come_from_the_flags_dataclass(tiny_model_dir, clips, tmp_path):
    """Every DecodeFlags field is a `mkd transcribe` option, and the given ones reach the transcriber."""
    import dataclasses

    from mkdeploy.cli.transcribe import DecodeFlags

    helptext = runner.invoke(app, ["transcribe", "--help"], env={"COLUMNS": "250"}).output
    for f in dataclasses.fields(DecodeFlags):
        assert "--" + f.name.replace("_", "-") in helptext
    args = ["transcribe", str(tiny_model_dir), str(clips / "c0.wav"), "-o", str(tmp_path / "t")]
    r = runner.invoke(
        app, [*args, "--threads", "1", "--no-timestamps", "--encoder-buckets", "10,30", "--dtype", "float32"]
    )
    assert r.exit_code == 0, r.output
    assert "encoder windows: 10 s, 30 s" in r.output and (tmp_path / "t" / "c0.txt").exists()
    r = runner.invoke(app, [*args, "--batch-size", "0", "--force"])
    assert r.exit_code == 2 and "--batch-size" in r.output
    from mkdeploy.cli.transcribe import _options

    assert _options(DecodeFlags(prompt="Kubernetes, kubectl")).initial_prompt == "Kubernetes, kubectl"
    assert _options(DecodeFlags()).initial_prompt is None
    assert _options(DecodeFlags(beam_size=5)).num_beams == 5 and _options(DecodeFlags()).num_beams == 1
    r = runner.invoke(app, [*args, "--beam-size", "0", "--force"])
    assert r.exit_code == 2 and "--beam-size 0" in r.output
    r = runner.invoke(app, [*args, "--beam-size", "3", "--no-timestamps", "--force"])  # beam search runs
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, "--prompt", "Kubernetes, kubectl", "--force", "-f", "json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, "--encoder-buckets", "45", "--force"])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_config_command_folds_dataclass_options_into_one_parameter():
    """One CLI style: a plain Typer signature; a `Fields(cls)` parameter becomes one option per field and
    arrives as the dict of the fields given (unset ones absent, lists split on commas)."""
    import dataclasses

    import pytest
    import typer

    from mkdeploy.cli.common import Fields, config_command

    @dataclasses.dataclass
    class Knobs:
        rate: float = dataclasses.field(default=0.5, metadata={"help": "a rate"})
        names: list[str] = dataclasses.field(default_factory=list, metadata={"help": "names"})

    seen = {}

    @config_command
    def cmd(path: str = typer.Argument(...), loud: bool = typer.Option(False, "--loud"), knobs=Fields(Knobs)):
        seen.update(path=path, loud=loud, knobs=knobs)

    probe = typer.Typer(rich_markup_mode=None)  # as cli/main.py: help printed as written
    probe.command()(cmd)
    probe.command("other")(lambda: None)  # two commands: invoked by name
    r = CliRunner().invoke(probe, ["cmd", "x", "--names", "a, b", "--loud"])
    assert r.exit_code == 0, r.output
    assert seen == {"path": "x", "loud": True, "knobs": {"names": ["a", "b"]}}
    r = CliRunner().invoke(probe, ["cmd", "--help"], terminal_width=200)
    assert "--rate" in r.output and "a rate [default: 0.5]" in r.output and "--knobs" not in r.output

    with pytest.raises(TypeError, match="rate"):  # an own option named like a field is refused at import

        @config_command
        def clash(rate: float = typer.Option(1.0), knobs=Fields(Knobs)):
            pass

    with pytest.raises(TypeError, match="rate"):  # so is a group named like one of its fields

        @config_command
        def clash_group(rate=Fields(Knobs)):
            pass
