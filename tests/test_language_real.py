"""Language detection and translation with the real multilingual base, on espeak-ng's German and Spanish
(and Piper's English): `mkd transcribe --language auto` and the library. espeak-ng's French voice is not
used: base hears it as Thai (p 0.29), which says more of the voice than of the detector (README,
*Languages*)."""

import json

import pytest
import soundfile as sf
from typer.testing import CliRunner

from mkdeploy.cli.main import app
from mkdeploy.demo.synthesis import Voice, synthesize
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

pytestmark = pytest.mark.integration

SPEECH = {
    "de": ("Guten Morgen, ich heiße Thomas und ich wohne seit zehn Jahren in Berlin.", Voice("espeak-ng", "de")),
    "es": ("Buenos días, me llamo Carlos y vivo en Madrid desde hace diez años.", Voice("espeak-ng", "es")),
    "en": ("The weather is nice today and we will walk to the park.", Voice("piper", "joe")),
}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("languages")
    for code, (text, voice) in SPEECH.items():
        sf.write(d / f"{code}.wav", synthesize(text, voice), 16000)
    return d


def test_base_detects_and_translates(base_teacher, speech):
    tr = WhisperTranscriber.from_pretrained(base_teacher, device="cpu")
    audios = [sf.read(speech / f"{c}.wav", dtype="float32")[0] for c in SPEECH]
    res = tr.transcribe_arrays(audios, TranscriptionOptions(return_timestamps=False))
    assert [t.language for t in res] == list(SPEECH)
    assert all(t.language_probability > 0.8 for t in res)
    assert "Berlin" in res[0].text and "Morgen" in res[0].text  # transcribed in German, not translated
    out = tr.transcribe_arrays(audios[:2], TranscriptionOptions(return_timestamps=False, task="translate"))
    assert "Good morning" in out[0].text and "Berlin" in out[0].text
    assert "Madrid" in out[1].text and "Buenos" not in out[1].text


def test_cli_language_auto_reports_it(base_teacher, speech, tmp_path):
    r = CliRunner().invoke(
        app, ["transcribe", str(base_teacher), str(speech / "de.wav"), "-f", "json", "-o", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    assert "[language de, p=0.9" in r.output
    js = json.loads((tmp_path / "de.json").read_text())
    assert js["language"] == "de" and js["language_probability"] > 0.8
    r = CliRunner().invoke(
        app, ["transcribe", str(base_teacher), str(speech / "de.wav"), "--language", "xx", "-o", str(tmp_path / "x")]
    )
    assert r.exit_code != 0 and "not a Whisper language code" in r.output and "Traceback" not in r.output
