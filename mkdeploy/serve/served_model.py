"""The served model: loaded off the event loop, warmed on the committed clips, then marked ready."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from mkdeploy.audio import reference_clips
from mkdeploy.options import TranscriptionOptions
from mkdeploy.serve.config import ServeConfig
from mkdeploy.transcription.loading import installed, load_transcriber

logger = logging.getLogger("mkdeploy.serve")


class Engine:
    """One model shared by every request.

    Attributes:
        transcriber: the loaded model (None until loaded).
        ready: set once the model is loaded and has decoded its warm-up clips.
        error: why loading failed, if it did.
    """

    def __init__(self, config: ServeConfig):
        self.config = config
        #: a WhisperTranscriber, or the torch-free OnnxTranscriber (mkdeploy.transcription.loading)
        self.transcriber: Any = None
        self.ready = threading.Event()
        self.error: str | None = None

    def load(self) -> None:
        """Load and warm the model (blocking; the app runs it on a thread so /health answers meanwhile)."""
        c = self.config
        t0 = time.perf_counter()
        if (c.vad or c.batched_long_form) and not installed("silero_vad"):
            # the base install: Silero VAD runs on torch, which is not there
            logger.warning(
                "--vad and --batched-long-form are off: silero-vad is not installed (pip install 'mkdeploy[serve]'); "
                "long audio is decoded window by window"
            )
            c.vad = c.batched_long_form = False
        try:
            tr = load_transcriber(c.model, c.backend, c.device, c.threads, c.dtype, c.variant)
            # The first calls allocate and (ORT) optimise; a warm-up keeps that out of the first user's latency.
            buckets = tuple(c.encoder_buckets) if c.encoder_buckets else None
            clips = [audio for audio, _ in reference_clips()]
            warm = TranscriptionOptions(
                return_timestamps=False, batch_size=len(clips), encoder_buckets=buckets, vad_filter=c.vad
            )  # the VAD loads its ONNX session on first use: in the warm-up, not in a user's request
            tr.transcribe_arrays(clips, warm)  # also checks that an export takes the windows asked for
            tr.transcribe_arrays(clips[:1], TranscriptionOptions(return_timestamps=True, encoder_buckets=buckets))
        except Exception as exc:  # reported by /health and the log; the process stays up to say so
            self.error = f"{c.model}: {exc}"
            logger.error("model failed to load: %s", self.error)
            return
        self.transcriber = tr
        self.ready.set()
        logger.info("model %s ready on %s/%s in %.1f s", c.served_id, tr.backend, tr.device, time.perf_counter() - t0)

    def piece_batch(self) -> int:
        """Pieces of a long upload per decode call: ``--piece-batch``, else 1 on CPU (a batch costs its size
        in time there, and a short clip arriving waits for it) and ``--max-batch`` on CUDA."""
        if self.config.piece_batch > 0:
            return self.config.piece_batch
        return self.config.max_batch if self._on_gpu() else 1

    def yields_between_steps(self) -> bool:
        """Whether a batch of pieces may decode short requests between two of its decoder steps
        (:mod:`mkdeploy.serve.batcher`): not on CUDA, where the static decoder replays CUDA graphs on
        buffers of its own, and not with ``--no-yield-steps``."""
        return self.config.yield_steps and not self._on_gpu()

    def packs(self) -> bool:
        """Whether ``--pack`` applies: the PyTorch/optimum engine's one timestamped pass over packed windows
        (the torch-free runtime decodes every clip in its own window)."""
        return hasattr(self.transcriber, "decode_timestamped")

    def _on_gpu(self) -> bool:
        return self.transcriber is not None and self.transcriber.device == "cuda"

    def decode(self, audios, options: TranscriptionOptions):
        assert self.transcriber is not None, "decode before the model was loaded"
        # packed windows hold several callers' clips: words are aligned per clip, so those requests decode unpacked
        if self.config.pack and len(audios) > 1 and not options.word_timestamps and self.packs():
            from mkdeploy.transcription.packing import transcribe_packed  # the PyTorch/optimum engine's

            results, redone = transcribe_packed(self.transcriber, audios, options)
            if redone:
                logger.info(
                    "packing: %d of %d clips decoded again unpacked (unattributable segments)", redone, len(audios)
                )
            return results
        return self.transcriber.transcribe_arrays(audios, options)
