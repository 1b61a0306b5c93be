"""Manifests: JSONL rows {"audio": path relative to the manifest, "text": optional reference}, or a folder
of audio files with same-named .txt references."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mkdeploy.audio import AUDIO_EXTENSIONS
from mkdeploy.errors import DataError
from mkdeploy.fsutil import atomic_write_text


@dataclass
class Utterance:
    """One manifest row.

    Attributes:
        id: stable identifier (the audio path as written in the manifest).
        audio: resolved audio path.
        text: the reference transcript, or None when unlabelled.
    """

    id: str
    audio: Path
    text: str | None = None


def load_manifest(path: str | Path, require_text: bool = False) -> list[Utterance]:
    """Read a JSONL manifest or a folder of audio files with .txt references.

    Args:
        path: a .jsonl file or a folder.
        require_text: raise when a row has no reference (evaluation needs them).

    Raises:
        DataError: missing manifest, bad JSON, rows without "audio", or missing references when required.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such manifest; give a JSONL file or a folder of audio with .txt files")
    rows: list[Utterance] = []
    if path.is_dir():
        for audio in sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS):
            txt = audio.with_suffix(".txt")
            text = txt.read_text(encoding="utf-8").strip() if txt.exists() else None
            rows.append(Utterance(audio.name, audio, text))
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(
                f"{path}: not a JSONL manifest (not UTF-8 text); give a JSONL file or a folder of audio with .txt files"
            ) from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(obj, dict) or "audio" not in obj:
                raise DataError(f'{path}:{n}: row lacks "audio"; expected {{"audio": "clip.wav", "text": "..."}}')
            audio = Path(obj["audio"])
            rows.append(
                Utterance(
                    str(obj.get("id", obj["audio"])),
                    audio if audio.is_absolute() else path.parent / audio,
                    obj.get("text"),
                )
            )
    if not rows:
        raise DataError(f"{path}: holds no utterances")
    if require_text:
        missing = [r.id for r in rows if r.text is None]
        if missing:
            raise DataError(
                f'{path}: {len(missing)} rows have no reference text (first: {missing[0]}); add "text" or .txt files'
            )
    return rows


def write_manifest(path: str | Path, rows: list[Utterance]) -> Path:
    """Write rows as JSONL with audio paths relative to the manifest where possible."""

    path = Path(path)
    lines = []
    for r in rows:
        try:
            audio = str(Path(r.audio).resolve().relative_to(path.parent.resolve()))
        except ValueError:
            audio = str(Path(r.audio).resolve())
        obj = {"id": r.id, "audio": audio}
        if r.text is not None:
            obj["text"] = r.text
        lines.append(json.dumps(obj, ensure_ascii=False))
    return atomic_write_text(path, "\n".join(lines) + "\n")
