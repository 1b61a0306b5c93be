"""`mkd merge`: fold a run's adapters into the student and save a plain HF Whisper directory.

The heads are training-only and are dropped. Logits before and after the merge must agree (atol 1e-4 in
fp32) and no weight may be NaN or inf, or nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mkdeploy.errors import MkdError, ModelError
from mkdeploy.fsutil import atomic_output_dir


@dataclass
class MergeResult:
    """Attributes:
        path: the merged model directory.
        checkpoint: the checkpoint merged.
        max_abs_logit_diff: before vs after the merge, on a probe input.
    """

    path: Path
    checkpoint: Path
    step: int
    max_abs_logit_diff: float


def _probe(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    feats = torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)
    ids = torch.tensor([[model.generation_config.decoder_start_token_id, 100, 200, 300, 400]])
    with torch.inference_mode():
        return model(input_features=feats, decoder_input_ids=ids).logits.float()


def merge_run(run: str | Path, out: str | Path, force: bool = False, atol: float = 1e-4,
              checkpoint: str | Path | None = None) -> MergeResult:
    """Merge the newest checkpoint of ``run`` into its student.

    Args:
        run: the run directory of `mkd train`.
        out: the merged model directory (atomic; needs ``force`` to replace).
        atol: allowed logit difference between the adapter model and the merged one.
        checkpoint: a specific checkpoint folder (default: the newest).

    Returns:
        a :class:`MergeResult`.
    """
    from safetensors.torch import load_file

    from mkdeploy.distill.trainer import latest_checkpoint
    from mkdeploy.models.student import load_whisper

    run = Path(run)
    if not (run / "run.json").exists():
        raise ModelError(f"{run}: not a training run (no run.json); give the --output directory of `mkd train`")
    ck = Path(checkpoint) if checkpoint else latest_checkpoint(run)
    if ck is None or not (ck / "state.json").exists():
        raise ModelError(f"{run}: no complete checkpoint yet; train (or --resume) until one is saved")
    info = json.loads((run / "run.json").read_text())
    state = json.loads((ck / "state.json").read_text())
    student_dir = Path(info["student"])
    model, processor = load_whisper(student_dir)
    model.eval()
    if state["train_mode"] == "lora":
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(model, ck / "adapter").eval()
        before = _probe(peft_model)
        merged = peft_model.merge_and_unload()
    else:
        model.model.decoder.load_state_dict(load_file(ck / "decoder.safetensors"))
        before = _probe(model)
        merged = model
    bad = [n for n, p in merged.state_dict().items() if not torch.isfinite(p).all()]
    if bad:
        raise MkdError(f"{ck}: merged weights hold NaN or inf ({bad[0]} and {len(bad) - 1} more); nothing written — "
                       "resume from an earlier checkpoint or train with a lower --lr")
    after = _probe(merged)
    diff = float((before - after).abs().max())
    if diff > atol:
        raise MkdError(f"{ck}: merged logits differ from the adapter model's by {diff:.2e} > {atol}; nothing written")
    if any("lora_" in n for n, _ in merged.named_parameters()):
        raise MkdError("peft modules remained after merge_and_unload")
    merged.config.mkdeploy_distilled = {"run": str(run.resolve()), "checkpoint": ck.name, "step": state["step"],
                                        "teacher": info.get("teacher")}
    with atomic_output_dir(out, force=force) as tmp:
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        merged.generation_config.save_pretrained(tmp)
        norm = student_dir / "normalizer.json"
        if norm.exists():
            (tmp / "normalizer.json").write_bytes(norm.read_bytes())
    return MergeResult(Path(out), ck, state["step"], diff)
