"""A model's encoder windows without torch: the buckets a windowed student carries in its config, and which
clips decode together in which window. :mod:`mkdeploy.models.window` builds the PyTorch side on these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mkdeploy.constants import CHUNK_S, SAMPLE_RATE
from mkdeploy.errors import MkdError

#: config.json key of a windowed student's buckets (seconds).
BUCKETS_ATTR = "mkdeploy_encoder_buckets"
#: config.json key of an ONNX export whose encoder was traced with a dynamic frame axis.
ONNX_DYNAMIC_FRAMES_ATTR = "mkdeploy_onnx_dynamic_frames"
#: The windows a student serves when none are given.
DEFAULT_BUCKETS: tuple[int, ...] = (5, 10, 20, 30)
#: Whisper's window: the largest bucket, and the one long-form audio always uses.
FULL_WINDOW_S = CHUNK_S


@dataclass(frozen=True)
class WindowConfig:
    """The encoder windows a model serves.

    Attributes:
        buckets: window lengths in seconds, ascending; 30 is always the last (long audio uses it).
    """

    buckets: tuple[int, ...] = field(default=DEFAULT_BUCKETS, metadata={"help": "window lengths in seconds"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "buckets", normalise_buckets(self.buckets))

    def bucket_for(self, seconds: float) -> int:
        """The smallest window (s) that holds ``seconds`` of audio; 30 for anything longer."""
        for b in self.buckets:
            if seconds <= b + 1e-6:
                return b
        return FULL_WINDOW_S

    @property
    def windowed(self) -> bool:
        """True unless the only window is the full 30 s."""
        return self.buckets != (FULL_WINDOW_S,)


def normalise_buckets(buckets: Sequence[int | float]) -> tuple[int, ...]:
    """Sorted, unique, whole seconds in 1..30, with 30 appended (long audio needs the full window).

    Raises:
        MkdError: a bucket outside 1..30 s or not a whole number of seconds.
    """
    out = set()
    for b in buckets:
        if float(b) != int(float(b)) or not 1 <= int(float(b)) <= FULL_WINDOW_S:
            raise MkdError(f"encoder bucket {b!r}: give whole seconds between 1 and {FULL_WINDOW_S}, e.g. 5,10,20,30")
        out.add(int(float(b)))
    out.add(FULL_WINDOW_S)
    return tuple(sorted(out))


def plan_batches(lengths: dict[int, int], windows: WindowConfig, batch_size: int) -> list[tuple[int, list[int]]]:
    """(encoder window, clip indices) per batch. Batches of similar length waste less padding (long-form
    pads every clip to the longest), and a batch never mixes encoder windows: each clip is encoded in the
    smallest bucket that holds it.

    Args:
        lengths: clip index -> its length in samples (the clips to decode).
        windows: the encoder buckets.
        batch_size: clips per batch at most.
    """
    groups: dict[int, list[int]] = {}
    for i in sorted(lengths, key=lambda i: lengths[i]):
        groups.setdefault(windows.bucket_for(lengths[i] / SAMPLE_RATE), []).append(i)
    return [
        (bucket, members[start : start + batch_size])
        for bucket, members in groups.items()
        for start in range(0, len(members), batch_size)
    ]
