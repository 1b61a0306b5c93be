"""Training batches: which clips a step trains on, in which encoder window, and the tensors it needs.

The batch order is a function of the step counter and the seed alone, so a resumed run and every DDP rank
draw the same global batches without saving any sampler state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.distill.records import Sample, TeacherOutputs
from mkdeploy.models.window import FULL_WINDOW_S, WindowConfig, window_features


def batch_indices(step: int, n: int, global_batch: int, seed: int) -> list[int]:
    """The global batch of ``step``: epochs are seeded permutations laid end to end, so the data
    position is the step counter alone (resume needs nothing else, every rank agrees)."""
    start = step * global_batch
    out: list[int] = []
    while len(out) < global_batch:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng(seed + epoch).permutation(n)
        out.extend(int(i) for i in perm[offset : offset + global_batch - len(out)])
    return out


@dataclass
class Batch:
    """One step's clips, ready for the student.

    Attributes:
        samples: the clips.
        ids: [B, T] teacher-forced decoder input (padded with end-of-text).
        labels: [B, T] next-token targets, -100 where nothing is taught.
        mask: [B, T] 1 on real positions.
        teacher: each clip's cached teacher outputs.
        window: the encoder window in seconds.
        features: [B, mels, frames] log-mel input, or None when ``encoded`` is given.
        encoded: [B, frames, d] the frozen encoder's states, or None when the encoder runs.
    """

    samples: list[Sample]
    ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    teacher: list[TeacherOutputs]
    window: int
    features: torch.Tensor | None = None
    encoded: torch.Tensor | None = None

    def encoder_inputs(self, device: Any) -> dict[str, Any]:
        """The student's encoder input: cached encoder states when the encoder is frozen, else features."""
        if self.encoded is not None:
            return {"encoder_outputs": (self.encoded.to(device),)}
        assert self.features is not None
        return {"input_features": self.features.to(device)}

    def decoder_inputs(self, device: Any) -> dict[str, torch.Tensor]:
        return {"decoder_input_ids": self.ids.to(device), "decoder_attention_mask": self.mask.to(device)}

    def paired(self, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch row, student position) of every position paired with the teacher, in cache order."""
        rows = torch.cat([torch.full((len(s.student_pos),), b, dtype=torch.long) for b, s in enumerate(self.samples)])
        cols = torch.cat([torch.tensor(s.student_pos, dtype=torch.long) for s in self.samples])
        return rows.to(device), cols.to(device)


class EncoderStates:
    """The frozen encoder's last states per clip, computed on first use and kept: a student whose encoder
    does not train encodes each clip to the same states every epoch.

    Args:
        encode: features [B, mels, 3000] -> states [B, 1500, d].
        features: audio clips -> their features.
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], features: Callable[[list], torch.Tensor]):
        self.encode, self.features = encode, features
        self.states: dict[int, torch.Tensor] = {}

    def get(self, idx: list[int], samples: list[Sample]) -> torch.Tensor:
        todo = sorted({i for i in idx if i not in self.states})
        if todo:
            with torch.no_grad():
                states = self.encode(self.features([samples[i].audio for i in todo])).float().cpu()
            self.states.update(zip(todo, states))
        return torch.stack([self.states[i] for i in idx])


class BatchSampler:
    """Draws and builds the batches of a run.

    Args:
        samples: the training clips.
        processor: the student's processor (feature extractor and tokenizer).
        seed: the recipe's seed.
        windows: the student's encoder buckets (None: Whisper's 30 s window).
        full_window_prob: with buckets, the share of steps trained at 30 s anyway.
        encoder_states: the frozen encoder's cache, or None when the encoder trains.
    """

    def __init__(
        self,
        samples: list[Sample],
        processor,
        seed: int,
        windows: WindowConfig | None = None,
        full_window_prob: float = 0.0,
        encoder_states: EncoderStates | None = None,
    ):
        self.samples, self.processor, self.seed = samples, processor, seed
        self.windows, self.full_window_prob = windows, full_window_prob
        self.encoder_states = encoder_states
        self.groups: dict[int, list[int]] = {}
        if windows is not None:
            # sample indices by the smallest bucket that holds them
            for i, smp in enumerate(samples):
                self.groups.setdefault(windows.bucket_for(len(smp.audio) / SAMPLE_RATE), []).append(i)
        self.eot = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def indices(self, step: int, global_batch: int) -> list[int]:
        """The global batch of ``step``. With encoder buckets every batch is drawn from one bucket (chosen
        with probability proportional to its clips, members drawn with a seeded generator), so a short
        clip is trained in its own window rather than padded to the longest clip a random batch holds."""
        if not self.windows:
            return batch_indices(step, len(self.samples), global_batch, self.seed)
        keys = sorted(self.groups)
        rng = np.random.default_rng([self.seed, step, 1])
        bucket = keys[rng.choice(len(keys), p=[len(self.groups[k]) / len(self.samples) for k in keys])]
        members = self.groups[bucket]
        return [int(i) for i in rng.choice(members, size=global_batch, replace=len(members) < global_batch)]

    def window(self, samples: list[Sample], step: int) -> int:
        """Encoder window (s) of a batch: the smallest bucket holding its longest clip; 30 s without buckets
        and, with buckets, for a seeded ``full_window_prob`` share of steps (the same on every rank)."""
        if not self.windows:
            return FULL_WINDOW_S
        if np.random.default_rng([self.seed, step]).random() < self.full_window_prob:
            return FULL_WINDOW_S
        return self.windows.bucket_for(max(len(s.audio) for s in samples) / SAMPLE_RATE)

    def features(self, audios: list[np.ndarray], window: int = FULL_WINDOW_S) -> torch.Tensor:
        return window_features(self.processor.feature_extractor, audios, window)

    def make(self, idx: list[int], step: int = 0) -> Batch:
        samples = [self.samples[i] for i in idx]
        window = self.window(samples, step)
        encoded = self.encoder_states.get(idx, self.samples) if self.encoder_states is not None else None
        # frame t of the student's window is frame t of the teacher's 30 s window: the cached teacher
        # states (valid frames only) align with the first frames of any window that holds the clip
        feats = None if encoded is not None else self.features([s.audio for s in samples], window)
        width = max(len(s.student.input_ids) for s in samples)
        ids = torch.full((len(samples), width), self.eot, dtype=torch.long)
        labels = torch.full((len(samples), width), -100, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for b, s in enumerate(samples):
            n = len(s.student.input_ids)
            ids[b, :n] = torch.tensor(s.student.input_ids)
            labels[b, :n] = torch.tensor(s.student.labels)
            mask[b, :n] = 1
        # a clip taught in timestamp mode pairs no decoder position: its cached decoder rows are not read
        teacher = [TeacherOutputs.load(s.cache, decoder_rows=not s.timestamped) for s in samples]
        return Batch(samples, ids, labels, mask, teacher, window, feats, encoded)
