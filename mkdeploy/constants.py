"""Whisper's fixed numbers, named once (openai/whisper's audio.py and decoding.py hold the same values).

The core layer: every other module may import it, it imports nothing of the project.
"""

from __future__ import annotations

#: Whisper's input rate: every loader resamples to it.
SAMPLE_RATE = 16000
#: One encoder window (Whisper's chunk): 30 s of log-mel frames.
CHUNK_S = 30
#: Samples in one Whisper window (30 s).
WINDOW_SAMPLES = CHUNK_S * SAMPLE_RATE
#: Log-mel frames per second (hop 160 at 16 kHz).
MEL_FRAMES_PER_S = 100
#: Audio samples per encoder frame (hop 160, conv stride 2): 1500 frames per 30 s window.
SAMPLES_PER_FRAME = 320
#: Seconds per timestamp token step (<|0.00|>, <|0.02|>, ...).
TIME_PRECISION_S = 0.02
#: openai/whisper's repetition-loop test on text: len(text) / len(zlib(text)) above this is a loop.
COMPRESSION_RATIO_MAX = 2.4

#: help of the --threads and --dtype options every command that loads a model shares
THREADS_HELP = "CPU threads for torch, ONNX Runtime and CTranslate2 alike; 0: each engine's default."
DTYPE_HELP = "PyTorch weights: auto (fp16 on CUDA, fp32 on CPU), float32, float16 or bfloat16."
