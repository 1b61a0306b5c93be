"""Students: loading a pre-trained one, pruning one from the teacher (distil-whisper), LoRA injection."""

from __future__ import annotations

from pathlib import Path

from mkdeploy.errors import MkdError, ModelError
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.dirs import check_model_dir, is_onnx_dir
from mkdeploy.models.window import set_model_buckets

PRUNED_MARKER = "mkdeploy_pruned_from"


def load_whisper(path: str | Path, dtype=None):
    """(model, processor) of a HF Whisper directory, with clear errors."""
    import torch  # heavy; imported on use so the core import stays light
    from transformers import (  # heavy; imported on use so the core import stays light
        AutoProcessor,
        WhisperForConditionalGeneration,
    )

    path = check_model_dir(path)
    if is_onnx_dir(path) and not (path / "model.safetensors").exists():
        raise ModelError(f"{path}: an ONNX export; training needs the PyTorch model directory")
    try:
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype or torch.float32)
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the Whisper model ({str(exc).splitlines()[0]})") from None
    return model, processor


def spread_layers(n_total: int, k: int) -> list[int]:
    """k layer indices spread evenly over n_total, first and last included (distil-whisper's choice)."""
    if not 1 <= k <= n_total:
        raise MkdError(f"cannot keep {k} of {n_total} layers")
    if k == 1:
        return [n_total - 1]
    return sorted({round(i * (n_total - 1) / (k - 1)) for i in range(k)})


def init_pruned_student(
    teacher: str | Path, out: str | Path, decoder_layers: int, encoder_layers: int | None = None, force: bool = False
) -> Path:
    """Copy the teacher and keep ``decoder_layers`` (and optionally ``encoder_layers``) layers.

    Args:
        teacher: HF Whisper directory.
        out: the student directory (atomic).
        decoder_layers: decoder layers to keep, spread over the teacher's, first and last included.
        encoder_layers: encoder layers to keep (None: the whole encoder).
        force: replace ``out``.

    Returns:
        ``out``. Its config records which teacher layers were kept (the trainer warns when LoRA alone
        meets a pruned student: the kept layers need full training, README, The recipe in a paragraph).
    """
    import torch  # heavy; imported on use so the core import stays light

    model, processor = load_whisper(teacher)
    cfg = model.config
    keep_dec = spread_layers(cfg.decoder_layers, decoder_layers)
    keep_enc = spread_layers(cfg.encoder_layers, encoder_layers) if encoder_layers else list(range(cfg.encoder_layers))
    model.model.decoder.layers = torch.nn.ModuleList([model.model.decoder.layers[i] for i in keep_dec])
    model.model.encoder.layers = torch.nn.ModuleList([model.model.encoder.layers[i] for i in keep_enc])
    for idx, layer in enumerate(model.model.decoder.layers):
        layer.self_attn.layer_idx = idx  # the KV cache indexes layers by position
        layer.encoder_attn.layer_idx = idx
    cfg.decoder_layers, cfg.encoder_layers = len(keep_dec), len(keep_enc)
    # word timestamps read these heads: a kept layer's heads keep their role under its new index; heads of
    # dropped layers go (none left: mkdeploy/transcription/alignment.py chooses heads by measurement on the clips at hand)
    gen = model.generation_config
    if getattr(gen, "alignment_heads", None):
        gen.alignment_heads = [
            [keep_dec.index(layer), h] for layer, h in gen.alignment_heads if layer in keep_dec
        ] or None
    cfg.num_hidden_layers = len(keep_enc)
    setattr(
        cfg,
        PRUNED_MARKER,
        {"teacher": str(Path(teacher).resolve()), "decoder_layers": keep_dec, "encoder_layers": keep_enc},
    )
    return _save(model, processor, teacher, out, force)


def _save(model, processor, source: str | Path, out: str | Path, force: bool) -> Path:
    """Write a student directory atomically, with the source's text normaliser."""
    with atomic_output_dir(out, force=force) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for extra in ("normalizer.json",):
            src = Path(source) / extra
            if src.exists():
                (tmp / extra).write_bytes(src.read_bytes())
    return Path(out)


def init_windowed_student(source: str | Path, out: str | Path, buckets, force: bool = False) -> Path:
    """Copy a Whisper model as a student for short encoder windows (models/window.py).

    The weights are unchanged (a window's position table is the first rows of the 30 s one); the config
    records the buckets, so ``mkd train`` trains for them and every later stage serves them.

    Args:
        source: HF Whisper directory (a pre-trained student such as tiny.en, or a pruned one).
        out: the student directory (atomic).
        buckets: window lengths in seconds (30 is added).
        force: replace ``out``.
    """

    model, processor = load_whisper(source)
    set_model_buckets(model.config, buckets)
    return _save(model, processor, source, out, force)


def is_pruned(model) -> bool:
    return bool(getattr(model.config, PRUNED_MARKER, None))


def lora_target_modules(model, targets: list[str], encoder_top: int) -> list[str]:
    """Full module names for LoRA: every decoder layer's targets, plus the top ``encoder_top`` encoder
    layers' (self-attention and MLP)."""
    n_enc = model.config.encoder_layers
    enc_layers = set(range(max(0, n_enc - encoder_top), n_enc))
    names = []
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in targets:
            continue
        parts = name.split(".")
        if "decoder" in parts and "layers" in parts:
            names.append(name)
        elif "encoder" in parts and "layers" in parts and int(parts[parts.index("layers") + 1]) in enc_layers:
            names.append(name)
    return names


def apply_lora(model, r: int, alpha: int, dropout: float, targets: list[str], encoder_top: int):
    """Wrap the student with peft LoRA adapters; everything else frozen."""
    from peft import LoraConfig, get_peft_model  # heavy; only LoRA runs need it

    modules = lora_target_modules(model, targets, encoder_top)
    if not modules:
        raise MkdError(f"no LoRA target modules named {targets} in the student")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none")
    return get_peft_model(model, config)


def freeze_all_but_decoder(model) -> None:
    """Full-decoder mode: train the decoder's layers (pruned students need it), freeze the rest."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.model.decoder.layers.parameters():
        p.requires_grad_(True)
    for p in model.model.decoder.layer_norm.parameters():
        p.requires_grad_(True)


def count_parameters(module, trainable_only: bool = False) -> int:
    """Parameters counted once each (tied embeddings are one tensor)."""
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
