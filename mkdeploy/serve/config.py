"""Server settings: one dataclass whose field metadata carries the CLI help (as the recipe's does)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mkdeploy.constants import DTYPE_HELP, THREADS_HELP

#: Environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "MKD_API_KEY"


@dataclass
class ServeConfig:
    """What `mkd serve` runs with.

    The queue bound counts every accepted request not yet answered (waiting or being decoded): past it a
    request gets 503 with ``Retry-After`` at once instead of waiting behind work the server cannot finish.
    """

    model: str = field(metadata={"help": "HF Whisper directory or ONNX export directory."})
    model_name: str = field(default="", metadata={"help": "Model id served (default: the directory's name)."})
    backend: str = field(
        default="auto", metadata={"help": "auto, torch, onnx or onnx-lean (see mkd transcribe --backend)."}
    )
    device: str = field(default="auto", metadata={"help": "auto, cuda or cpu."})
    variant: str | None = field(default=None, metadata={"help": "ONNX variant: fp32, int8 or fp16."})
    threads: int = field(default=0, metadata={"help": THREADS_HELP})
    dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind (loopback unless you say)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on (0: any free port)."})
    api_key: str | None = field(
        default=None, metadata={"help": f"Require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set)."}
    )
    max_upload_mb: float = field(default=25.0, metadata={"help": "Largest upload in MB (OpenAI's limit is 25)."})
    max_queue: int = field(default=64, metadata={"help": "Requests accepted and not yet answered; more get 503."})
    max_batch: int = field(default=8, metadata={"help": "Requests decoded together at most (1: no batching)."})
    max_wait_ms: float = field(default=20.0, metadata={"help": "How long a batch waits for more requests."})
    request_timeout: float = field(default=120.0, metadata={"help": "Seconds before a request gets 504."})
    encoder_buckets: list[int] | None = field(
        default=None,
        metadata={"help": "Encoder windows in seconds, e.g. 10,30 (default: the model's own; see mkd transcribe)."},
    )
    beam_size: int = field(
        default=1, metadata={"help": "Beams per request (1: greedy; see mkd transcribe --beam-size)."}
    )
    pack: bool = field(
        default=False,
        metadata={"help": "Pack short requests of a batch into shared 30 s windows (one encoder pass for many)."},
    )
    vad: bool = field(default=True, metadata={"help": "Silero VAD before decoding: no speech gives ''."})
    batched_long_form: bool = field(
        default=True,
        metadata={
            "help": "Audio over 30 s is cut at VAD pauses into pieces of at most 30 s, sent to the batcher "
            "max-batch at a time: other callers' clips share those batches instead of waiting behind the file."
        },
    )
    piece_batch: int = field(
        default=0,
        metadata={
            "help": "Pieces of a long upload decoded in one call, taking turns with batches of short requests "
            "(0: 1 on CPU, where a batch costs its size in time, so a short clip waits for one piece; "
            "--max-batch on CUDA)."
        },
    )
    yield_steps: bool = field(
        default=True,
        metadata={
            "help": "A batch of long-upload pieces decodes waiting short requests between two of its decoder "
            "steps, so they wait for one step, not for the batch (CPU; see mkdeploy/serve/batcher.py)."
        },
    )
    max_audio_seconds: float = field(
        default=3600.0, metadata={"help": "Longest audio accepted in seconds; longer gets 413 (0: no limit)."}
    )
    log_text: bool = field(default=False, metadata={"help": "Put transcripts in the request log lines."})

    @property
    def served_id(self) -> str:
        return self.model_name or Path(self.model).resolve().name
