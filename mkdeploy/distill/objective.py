"""The training objective: which loss terms a recipe trains on, how each is computed on a batch, and their
weighted sum. The recipes of the ablation ladder (README, The recipe in a paragraph; arXiv 2606.00771):

    ce        cross-entropy on the (pseudo-)labels
    kd        + logit distillation at every paired position
    fitnet    + FitNets' MSE between projected student and mapped teacher states (the ``geo`` slot)
    manifold  + the geodesic (angular) alignment of those points and InfoNCE between them

plus the retention term (KL to the starting student) when ``w_retain > 0``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mkdeploy.distill.batches import Batch
from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distill.losses import FitNetLoss, GeodesicLoss, InfoNCELoss, LogitKDLoss, RetentionLoss
from mkdeploy.distill.tokens import SharedVocab
from mkdeploy.models.window import FULL_WINDOW_S

# recipe -> its terms besides ce and retain; "geo" holds FitNets' MSE in the fitnet recipe
RECIPE_TERMS: dict[str, tuple[str, ...]] = {
    "ce": (),
    "kd": ("kd",),
    "fitnet": ("kd", "geo"),
    "manifold": ("kd", "geo", "nce"),
}


class Objective:
    """The loss terms of one recipe.

    Args:
        config: the recipe.
        shared: the vocabulary student and teacher share (the KD term compares logits over it).
        enc_pairs, dec_pairs: aligned (student layer, teacher layer) pairs; empty for ce and kd.
        features: audio clips -> 30 s features (the retention term of a windowed student reads them).
        reference: a frozen copy of the starting student for the retention term of full-decoder runs
            (None for LoRA: with its adapters disabled the student is its start).
    """

    def __init__(
        self,
        config: RecipeConfig,
        shared: SharedVocab,
        enc_pairs: list[tuple[int, int]],
        dec_pairs: list[tuple[int, int]],
        features,
        reference=None,
    ):
        self.config, self.shared = config, shared
        self.enc_pairs, self.dec_pairs = enc_pairs, dec_pairs
        self.features, self.reference = features, reference
        self.terms = ("ce", *RECIPE_TERMS[config.recipe]) + (("retain",) if config.w_retain > 0 else ())
        self.kd = LogitKDLoss(config.tau_kd)
        self.align = FitNetLoss() if config.recipe == "fitnet" else GeodesicLoss()
        self.nce = InfoNCELoss(config.tau_nce)
        self.retain = RetentionLoss()

    @property
    def uses_hidden_states(self) -> bool:
        return "geo" in self.terms

    def weights(self, step: int) -> dict[str, float]:
        c = self.config
        return {"ce": c.w_ce, "kd": c.w_kd, "geo": c.w_geo, "nce": c.w_nce(step), "retain": c.w_retain}

    def total(self, terms: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        w = self.weights(step)
        # a CPU 0-dim start adds to tensors on any device
        return sum((w[k] * v for k, v in terms.items()), torch.zeros(()))

    def compute(self, module, inner, batch: Batch, device: Any) -> dict[str, torch.Tensor]:
        """Every term of the recipe on one batch, unweighted.

        Args:
            module: what trains, as the accelerator prepared it (DDP-wrapped on several ranks): it is called.
            inner: the same module unwrapped (``.student``, ``.heads``): it is inspected.
            batch: the batch.
            device: where the batch goes.
        """
        out = module(
            **batch.encoder_inputs(device),
            **batch.decoder_inputs(device),
            output_hidden_states=self.uses_hidden_states,
        )
        logits = out.logits
        labels = batch.labels.to(device)
        terms = {"ce": F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)}
        if "retain" in self.terms:
            terms["retain"] = self.retention(inner.student, batch, logits, labels, device)
        rows, cols = batch.paired(device)
        # a batch of timestamp-mode clips only has no paired position: its decoder terms are zero (kept in
        # the graph so every step logs the same terms and DDP sees every parameter used)
        zero = logits.sum() * 0.0
        if "kd" in self.terms:
            terms["kd"] = self._kd(logits, batch, rows, cols, device) if len(rows) else zero
        if "geo" in self.terms:
            terms.update(self.alignment(out, inner.heads, batch, rows, cols, zero, device))
        return terms

    def _kd(self, logits, batch: Batch, rows, cols, device) -> torch.Tensor:
        s_logits = logits[rows, cols]
        if not self.shared.identical:
            s_logits = s_logits[:, self.shared.student_ids.to(device)]
        t_logits = torch.cat([t.logits for t in batch.teacher if t.logits is not None]).to(device)
        return self.kd(s_logits, t_logits)

    def alignment(self, out, heads, batch: Batch, rows, cols, zero, device) -> dict[str, torch.Tensor]:
        """The projection heads' terms: geodesic (or FitNets' MSE) and InfoNCE between each paired layer's
        projected student points and the teacher's cached points under its frozen map."""
        Q = heads.teacher
        points = []
        for i, j in self.dec_pairs if len(rows) else []:
            a = heads.heads[f"dec_{i}"](out.decoder_hidden_states[i + 1][rows, cols])
            b = Q(torch.cat([t.decoder[j] for t in batch.teacher if j in t.decoder]).to(device).float())
            points.append((a, b))
        for i, j in self.enc_pairs:
            hs = out.encoder_hidden_states[i + 1]
            frames = [t.encoder[j] for t in batch.teacher]
            a = heads.heads[f"enc_{i}"](torch.cat([hs[b, : len(f)] for b, f in enumerate(frames)]))
            points.append((a, Q(torch.cat(frames).to(device).float())))
        geo, nce = [], []
        for a, b in points:
            geo.append(self.align(a, b))
            if "nce" in self.terms:
                k = min(self.config.nce_samples, len(a))
                pick = torch.randperm(len(a), device=a.device)[:k]
                nce.append(self.nce(a[pick], b[pick]))
        anchor = zero + sum(p.sum() * 0.0 for p in heads.parameters() if p.requires_grad)
        terms = {"geo": torch.stack(geo).sum() + anchor if geo else anchor}
        if "nce" in self.terms:
            terms["nce"] = torch.stack(nce).sum() if nce else anchor
        return terms

    def retention(self, student, batch: Batch, logits, labels, device) -> torch.Tensor:
        """KL from the starting student's predictions to the student's, at every labelled position."""
        inputs = batch.encoder_inputs(device)
        if batch.window != FULL_WINDOW_S:
            # A windowed student starts from a model trained on Whisper's 30 s window: its predictions there,
            # not on the trimmed window it is learning, are what to keep.
            inputs = {"input_features": self.features([s.audio for s in batch.samples]).to(device)}
        kw = {**inputs, **batch.decoder_inputs(device)}
        with torch.no_grad():
            if self.reference is not None:
                start = self.reference.to(device)(**kw).logits
            else:
                with student.disable_adapter():
                    start = student(**kw).logits
        valid = labels != -100
        return self.retain(logits[valid], start[valid])
