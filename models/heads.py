"""Point-wise projection heads and the layer-wise map (README, The recipe in a paragraph).

A student state h_S ∈ R^{d_S} goes through a head P_i into the aligned space R^D; a teacher state
h_T ∈ R^{d_T} goes through a frozen isometry Q. To stay inside the 1% budget a head is a frozen
embedding E (identity padding R^{d_S} → R^D, full rank) plus a trainable low-rank residual B·A: on the
demo pair a full 384×512 map would be 197k parameters per layer, the rank-16 residual is 14k.
"""

from __future__ import annotations

import torch
from torch import nn


def layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pair student layer i with teacher layer j(i) = round((i+1)·L_T/L_S) − 1 (last with last)."""
    return [(i, int(round((i + 1) * n_teacher / n_student)) - 1) for i in range(n_student)]


def _pad_identity(rows: int, cols: int) -> torch.Tensor:
    m = torch.zeros(rows, cols)
    k = min(rows, cols)
    m[:k, :k] = torch.eye(k)
    return m


class TeacherIsometry(nn.Module):
    """Frozen Q: R^{d_T} → R^D, D ≥ d_T; identity padding or a fixed random orthogonal map (seeded)."""

    weight: torch.Tensor

    def __init__(self, d_teacher: int, dim: int, kind: str = "orthogonal", seed: int = 0):
        super().__init__()
        if dim < d_teacher:
            raise ValueError(f"aligned width D={dim} must be at least the teacher's {d_teacher}")
        if kind == "orthogonal":
            g = torch.Generator().manual_seed(seed)
            q, _ = torch.linalg.qr(torch.randn(dim, d_teacher, generator=g))
            weight = q  # D × d_T with orthonormal columns: an isometry
        else:
            weight = _pad_identity(dim, d_teacher)
        self.register_buffer("weight", weight, persistent=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.to(self.weight.dtype) @ self.weight.T


class ProjectionHead(nn.Module):
    """P(h) = E·h + B·(A·h): frozen identity-padding E plus a trainable rank-r residual.

    B starts at zero, so at step 0 the head is the plain embedding and training starts from it.
    """

    embed: torch.Tensor

    def __init__(self, d_student: int, dim: int, rank: int = 16):
        super().__init__()
        self.register_buffer("embed", _pad_identity(dim, d_student), persistent=True)
        self.down = nn.Linear(d_student, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=True)
        nn.init.normal_(self.down.weight, std=d_student**-0.5)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.to(self.down.weight.dtype)
        return h @ self.embed.T + self.up(self.down(h))


class ProjectionHeads(nn.Module):
    """One head per aligned student layer, keyed "enc_{i}" / "dec_{i}", and the teacher isometry."""

    def __init__(
        self,
        d_student: int,
        d_teacher: int,
        encoder_pairs: list[tuple[int, int]],
        decoder_pairs: list[tuple[int, int]],
        rank: int = 16,
        dim: int | None = None,
        teacher_map: str = "orthogonal",
        seed: int = 0,
    ):
        super().__init__()
        dim = dim or max(d_student, d_teacher)
        self.dim = dim
        self.encoder_pairs = [tuple(p) for p in encoder_pairs]
        self.decoder_pairs = [tuple(p) for p in decoder_pairs]
        self.heads = nn.ModuleDict()
        for i, _ in self.encoder_pairs:
            self.heads[f"enc_{i}"] = ProjectionHead(d_student, dim, rank)
        for i, _ in self.decoder_pairs:
            self.heads[f"dec_{i}"] = ProjectionHead(d_student, dim, rank)
        self.teacher = TeacherIsometry(d_teacher, dim, teacher_map, seed)
        self.teacher.requires_grad_(False)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
