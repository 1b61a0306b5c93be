"""Whisper's fixed numbers, named once (openai/whisper's audio.py and decoding.py hold the same values).

The core layer: every other module may import it, it imports nothing of the project.
"""

from __future__ import annotations

#: Whisper's input rate: every loader resamples to it.
SAMPLE_RATE = 16000
#: One encoder window (Whisper's chunk): 30 s of log-mel frames.
CHUNK_S = 30
#: Log-mel frames per second (hop 160 at 16 kHz).
MEL_FRAMES_PER_S = 100
#: Audio samples per encoder frame (hop 160, conv stride 2): 1500 frames per 30 s window.
SAMPLES_PER_FRAME = 320
#: Seconds per timestamp token step (<|0.00|>, <|0.02|>, ...).
TIME_PRECISION_S = 0.02
#: openai/whisper's repetition-loop test on text: len(text) / len(zlib(text)) above this is a loop.
COMPRESSION_RATIO_MAX = 2.4
