"""`mkd merge`: fold a run's adapters into the student and save a plain HF Whisper directory.

By default it merges what training chose on dev (``RUN/selection.json``, :mod:`mkdeploy.distill.select`):
the best checkpoint, scaled to the best fraction α of its change, or the untrained student itself when
no candidate beat it, with a warning. ``checkpoint=`` overrides the choice. The model's config records
what was merged and why (``mkdeploy_distilled``). The heads are training-only and are dropped. Logits before and after the merge must agree (atol 1e-4 in
fp32) and no weight may be NaN or inf, or nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mkdeploy.distill.checkpoints import CheckpointInfo, CheckpointStore
from mkdeploy.distill.select import Selection
from mkdeploy.errors import MkdError, ModelError
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.student import load_whisper


@dataclass
class MergeResult:
    """Attributes:
    path: the merged model directory.
    checkpoint: the checkpoint merged.
    max_abs_logit_diff: before vs after the merge, on a probe input.
    """

    path: Path
    checkpoint: Path | None
    step: int
    max_abs_logit_diff: float
    alpha: float = 1.0
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


def _probe(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    feats = torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)
    ids = torch.tensor([[model.generation_config.decoder_start_token_id, 100, 200, 300, 400]])
    with torch.inference_mode():
        return model(input_features=feats, decoder_input_ids=ids).logits.float()


def _choose(
    run: Path, checkpoint: str | Path | None, alpha: float | None
) -> tuple[Path | None, float, str, dict | None]:
    """(checkpoint or None for the untrained student, alpha, reason, the chosen candidate)."""
    if checkpoint is not None:
        return Path(checkpoint), 1.0 if alpha is None else alpha, "checkpoint given on the command line", None
    sel = Selection.load(run)
    if sel is None:
        ck = CheckpointStore(run).latest()
        return (
            ck,
            1.0 if alpha is None else alpha,
            "newest checkpoint (the run has no dev selection: train with --eval)",
            None,
        )
    if alpha is not None:
        raise MkdError("--alpha needs --checkpoint: without one, merge uses the dev-selected scale")
    ck = run / "checkpoints" / sel.chosen.checkpoint if sel.training_helped else None
    return ck, sel.chosen.alpha, sel.reason(), asdict(sel.chosen)


def merge_run(
    run: str | Path,
    out: str | Path,
    force: bool = False,
    atol: float = 1e-4,
    checkpoint: str | Path | None = None,
    alpha: float | None = None,
) -> MergeResult:
    """Merge the dev-selected checkpoint of ``run`` (or a given one) into its student.

    Args:
        run: the run directory of `mkd train`.
        out: the merged model directory (atomic; needs ``force`` to replace).
        atol: allowed logit difference between the adapter model and the merged one.
        checkpoint: a specific checkpoint folder (default: the dev selection, else the newest).
        alpha: with ``checkpoint``, keep this fraction of its change (default 1).

    Returns:
        a :class:`MergeResult`; its ``warnings`` say when training did not help on dev.
    """

    run = Path(run)
    if not (run / "run.json").exists():
        raise ModelError(f"{run}: not a training run (no run.json); give the --output directory of `mkd train`")
    ck, alpha, reason, chosen = _choose(run, checkpoint, alpha)
    if not 0.0 <= alpha <= 1.0:
        raise MkdError(f"--alpha {alpha}: give a fraction between 0 and 1")
    warnings = []
    if ck is None and chosen is not None:
        warnings.append(f"{run}: training did not help on dev ({reason}); the merged model is the untrained student")
    elif ck is None or not (ck / "state.json").exists():
        raise ModelError(f"{run}: no complete checkpoint yet; train (or --resume) until one is saved")
    info = json.loads((run / "run.json").read_text())
    student_dir = Path(info["student"])
    model, processor = load_whisper(student_dir)
    model.eval()
    step = CheckpointInfo.read(ck).step if ck else 0
    merged, before = _apply_checkpoint(model, ck, alpha)
    diff = _check_merged(merged, before, ck, atol)
    merged.config.mkdeploy_distilled = {
        "run": str(run.resolve()),
        "checkpoint": ck.name if ck else None,
        "step": step,
        "alpha": alpha,
        "reason": reason,
        "selected": chosen,
        "warnings": warnings,
        "teacher": info.get("teacher"),
    }
    with atomic_output_dir(out, force=force) as tmp:
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        merged.generation_config.save_pretrained(tmp)
        norm = student_dir / "normalizer.json"
        if norm.exists():
            (tmp / "normalizer.json").write_bytes(norm.read_bytes())
    return MergeResult(Path(out), ck, step, diff, alpha, reason, warnings)


def _check_merged(merged, before: torch.Tensor, ck: Path | None, atol: float) -> float:
    """Refuse a merge with non-finite weights, logits that moved, or adapters left; returns the logit gap."""
    bad = [n for n, p in merged.state_dict().items() if not torch.isfinite(p).all()]
    if bad:
        raise MkdError(
            f"{ck}: merged weights hold NaN or inf ({bad[0]} and {len(bad) - 1} more); nothing written — "
            "resume from an earlier checkpoint or train with a lower --lr"
        )
    diff = float((before - _probe(merged)).abs().max())
    if diff > atol:
        raise MkdError(f"{ck}: merged logits differ from the adapter model's by {diff:.2e} > {atol}; nothing written")
    if any("lora_" in n for n, _ in merged.named_parameters()):
        raise MkdError("peft modules remained after merge_and_unload")
    return diff


def _apply_checkpoint(model, ck: Path | None, alpha: float):
    """The student with ``alpha`` of the checkpoint's change applied, and its probe logits before merging."""
    if ck is None:  # the untrained student
        return model, _probe(model)
    unmerged, fold = CheckpointStore.apply(model, ck, alpha)
    before = _probe(unmerged)
    return fold(), before
