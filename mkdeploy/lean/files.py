"""Files in, transcriptions out, for every engine: unreadable files reported (never fatal to the rest),
digital silence answered without decoding, and batches fixed by position."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mkdeploy.audio import load_audio_with_info
from mkdeploy.errors import AudioError
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import FileFailure, Transcription


def transcribe_files(
    transcribe_arrays: Callable[[Sequence[np.ndarray], TranscriptionOptions], list[Transcription]],
    paths: Sequence[str | Path],
    options: TranscriptionOptions,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[Transcription], list[FileFailure]]:
    """Transcribe files with an engine's ``transcribe_arrays``.

    Args:
        transcribe_arrays: the engine's (16 kHz arrays and options in, one result per array out).
        paths: audio files.
        options: decoding options.
        on_progress: called with the number of files just finished.

    Returns:
        (transcriptions of the readable files in input order, failures with one-line reasons).
    """
    done: list[Transcription] = []
    failures: list[FileFailure] = []
    pending: list[tuple[str, np.ndarray, float]] = []

    def flush() -> None:
        if not pending:
            return
        for (p, _, dur), t in zip(pending, transcribe_arrays([a for _, a, _ in pending], options)):
            t.path, t.duration = p, dur
            done.append(t)
        if on_progress:
            on_progress(len(pending))
        pending.clear()

    # Batches are fixed by position: inputs [k * batch_size, (k + 1) * batch_size), less the silent and
    # unreadable ones. A transcript then depends only on its input's neighbours (an int8 model's dynamic
    # quantisation scales by the whole batch), and `mkd transcribe --ray` forms the same batches.
    for i, p in enumerate(paths):
        if i % options.batch_size == 0:
            flush()
        try:
            audio, info = load_audio_with_info(p)
        except AudioError as exc:
            failures.append(FileFailure(str(p), str(exc)))
            if on_progress:
                on_progress(1)
            continue
        if info.silent:
            # Whisper hallucinates whole sentences on silence (README, Troubleshooting): report nothing instead.
            done.append(Transcription.of_silence(str(p), info.duration))
            if on_progress:
                on_progress(1)
            continue
        pending.append((str(p), audio, info.duration))
    flush()
    order = {str(p): i for i, p in enumerate(paths)}
    done.sort(key=lambda t: order.get(t.path, 0))
    return done, failures
