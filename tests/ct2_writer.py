"""Test helper: write CTranslate2 Whisper model.bin files (format version 6) with random weights."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from mkdeploy.models.ct2 import sinusoids

_CODES = {
    np.dtype(np.float32): 0,
    np.dtype(np.int8): 1,
    np.dtype(np.int16): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.float16): 4,
}


def _s(f, text: str) -> None:
    b = text.encode() + b"\0"
    f.write(struct.pack("<H", len(b)) + b)


def write_model_bin(
    path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6, spec: str = "WhisperSpec"
) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<I", version))
        _s(f, spec)
        f.write(struct.pack("<I", 3))
        f.write(struct.pack("<I", len(variables)))
        for name, arr in variables.items():
            arr = np.asarray(arr)
            _s(f, name)
            f.write(struct.pack("<B", arr.ndim))
            for d in arr.shape:
                f.write(struct.pack("<I", d))
            f.write(struct.pack("<B", _CODES[arr.dtype]))
            raw = np.ascontiguousarray(arr).tobytes()
            f.write(struct.pack("<I", len(raw)))
            f.write(raw)
        f.write(struct.pack("<I", len(aliases)))
        for a, t in aliases.items():
            _s(f, a)
            _s(f, t)


def random_whisper_variables(
    d: int = 64,
    heads: int = 2,
    enc_layers: int = 2,
    dec_layers: int = 2,
    ffn: int = 256,
    vocab: int = 51864,
    mels: int = 80,
    n_src: int = 1500,
    n_tgt: int = 448,
    std: float = 0.2,
    seed: int = 0,
    dtype=np.float16,
) -> dict[str, np.ndarray]:
    """Whisper variables as CTranslate2 names them, random N(0, std) weights (std ~0.2 keeps greedy
    decoding from collapsing onto one token)."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * std).astype(dtype)

    def ln():
        return (1 + rng.standard_normal(d) * 0.05).astype(dtype), (rng.standard_normal(d) * 0.05).astype(dtype)

    v: dict[str, np.ndarray] = {}

    def norm(prefix):
        v[f"{prefix}/gamma"], v[f"{prefix}/beta"] = ln()

    def lin(prefix, out, inp, zero_from=None):
        v[f"{prefix}/weight"] = w(out, inp)
        b = w(out)
        if zero_from is not None:  # CT2 stores a zero key bias inside the fused projections
            b[zero_from[0] : zero_from[1]] = 0
        v[f"{prefix}/bias"] = b

    v["decoder/activation"] = np.array(3, np.int8)
    v["decoder/alibi"] = np.array(0, np.int8)
    v["decoder/alignment_heads"] = np.array(1, np.int16)
    v["decoder/alignment_layer"] = np.array(-1, np.int16)
    v["decoder/embeddings/weight"] = w(vocab, d)
    for i in range(dec_layers):
        p = f"decoder/layer_{i}"
        norm(f"{p}/self_attention/layer_norm")
        lin(f"{p}/self_attention/linear_0", 3 * d, d, zero_from=(d, 2 * d))
        lin(f"{p}/self_attention/linear_1", d, d)
        norm(f"{p}/attention/layer_norm")
        lin(f"{p}/attention/linear_0", d, d)
        lin(f"{p}/attention/linear_1", 2 * d, d, zero_from=(0, d))
        lin(f"{p}/attention/linear_2", d, d)
        norm(f"{p}/ffn/layer_norm")
        lin(f"{p}/ffn/linear_0", ffn, d)
        lin(f"{p}/ffn/linear_1", d, ffn)
    norm("decoder/layer_norm")
    v["decoder/num_heads"] = np.array(heads, np.int16)
    v["decoder/position_encodings/encodings"] = w(n_tgt, d)
    v["decoder/pre_norm"] = np.array(1, np.int8)
    v["decoder/scale_embeddings"] = np.array(0, np.int8)
    v["decoder/start_from_zero_embedding"] = np.array(0, np.int8)
    v["encoder/conv1/weight"] = w(d, mels, 3)
    v["encoder/conv1/bias"] = w(d)
    v["encoder/conv2/weight"] = w(d, d, 3)
    v["encoder/conv2/bias"] = w(d)
    for i in range(enc_layers):
        p = f"encoder/layer_{i}"
        norm(f"{p}/self_attention/layer_norm")
        lin(f"{p}/self_attention/linear_0", 3 * d, d, zero_from=(d, 2 * d))
        lin(f"{p}/self_attention/linear_1", d, d)
        norm(f"{p}/ffn/layer_norm")
        lin(f"{p}/ffn/linear_0", ffn, d)
        lin(f"{p}/ffn/linear_1", d, ffn)
    norm("encoder/layer_norm")
    v["encoder/num_heads"] = np.array(heads, np.int16)
    v["encoder/position_encodings/encodings"] = sinusoids(n_src, d).astype(dtype)
    return v


def quantize_int8(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2's int8 layout: q = round(w * scale), scale = 127 / max|w| per output row."""
    out = {}
    for name, arr in variables.items():
        if name.endswith("/weight") and arr.ndim == 2 and "embeddings" not in name and "position" not in name:
            w = arr.astype(np.float32)
            scale = 127.0 / np.maximum(np.abs(w).max(axis=1), 1e-8)
            out[name] = np.round(w * scale[:, None]).astype(np.int8)
            out[name + "_scale"] = scale.astype(np.float32)
        else:
            out[name] = arr
    return out
