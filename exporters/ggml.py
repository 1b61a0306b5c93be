"""`mkd export --format ggml`: a model as whisper.cpp loads it (``whisper-cli``, ``whisper-server``,
pywhispercpp), so a team on whisper.cpp can serve a student.

The file is whisper.cpp's own model format, as its loader reads it (``whisper_model_load`` in
whisper.cpp's src/whisper.cpp): a header of hyper-parameters, the mel filter bank, the vocabulary as bytes,
then each tensor under openai/whisper's names with its dimensions reversed (ggml's ``ne[0]`` is the
contiguous one). Written here from the PyTorch weights, for what whisper.cpp's converters get wrong for the
students mkd makes (issue 48):

- **untied output projection**: whisper.cpp computes the logits with the token embedding and has no tensor
  for ``proj_out``; a student whose projection differs is refused, never written without it.
- **2-layer decoders**: whisper.cpp forces no-timestamps on a 2-layer decoder whose vocabulary is not
  51,866 tokens (it takes it for distil-whisper's first release, ``is_distil`` in src/whisper.cpp); such an
  export warns that whisper.cpp will transcribe it without timestamps.
- **short encoder windows**: whisper.cpp's ``audio_ctx`` encodes only the first ``audio_ctx`` positions, which
  is what a windowed student's bucket is; the manifest lists ``audio_ctx`` per bucket (50 per second) and
  :class:`mkdeploy.models.ggml.GgmlWhisper` sets it per clip. Called without it, whisper.cpp encodes 30 s.
- **alignment heads**: whisper.cpp's DTW presets are the teachers' and can name decoder layers a cut
  student lacks; the manifest records the student's own heads (for ``WHISPER_AHEADS_CUSTOM``).

``q8_0`` is ggml's 8-bit block format (32 weights per fp16 scale, ``quantize_row_q8_0_ref`` in ggml), the
format whisper.cpp's ``quantize`` tool writes for its 2-D weights; convolutions stay fp16, biases, norms and
position tables fp32, as there.

Parity, as for ONNX and CTranslate2: the parity clips transcribed by whisper.cpp itself (pywhispercpp,
greedy, no timestamps, Whisper's non-speech suppression, no temperature fallback) against the PyTorch
source at the same encoder window; the manifest records both texts.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mkdeploy.audio import reference_clips
from mkdeploy.constants import CHUNK_S
from mkdeploy.errors import MkdError, ModelError
from mkdeploy.exporters.target import TargetManifest, student_alignment_heads
from mkdeploy.fsutil import atomic_output_dir
from mkdeploy.models.dirs import check_model_dir, hash_model_dir, is_onnx_dir
from mkdeploy.models.ggml import GGML_FILE, GgmlWhisper, audio_ctx
from mkdeploy.models.window import model_buckets
from mkdeploy.options import scoring_options
from mkdeploy.transcription.runtime import WhisperTranscriber

MANIFEST = "mkdeploy_export.json"
GGML_MAGIC = 0x67676D6C  # "ggml"
#: ggml_ftype of the file's header, per --quantization (GGML_FTYPE_MOSTLY_F16, _MOSTLY_Q8_0). No f32: whisper.cpp
#: 1.8.5 (pywhispercpp 1.5.1) loads an all-f32 file and then aborts in its first encoder pass
#: (ggml-cpu ops.cpp: ``GGML_ASSERT(src0->type == GGML_TYPE_F16)``), so f16 is the most precise it runs.
FTYPES = {"f16": 1, "q8_0": 7}
#: ggml_type of one tensor's data (GGML_TYPE_F32, _F16, _Q8_0)
_F32, _F16, _Q8_0 = 0, 1, 8
#: quantised files carry ggml's quantisation version in the header's ftype (GGML_QNT_VERSION * 1000 + ftype)
_QNT_VERSION = 2
_QK8_0 = 32

#: HF module names -> openai/whisper's, the names whisper.cpp looks its tensors up by
_LAYER_NAMES = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_TOP_NAMES = {
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}


@dataclass
class GgmlManifest(TargetManifest):
    """Written to OUT/mkdeploy_export.json (fields of :class:`~mkdeploy.exporters.target.TargetManifest`, and:)

    Attributes:
        file: the model file in the export directory.
        audio_ctx: encoder bucket in seconds -> whisper.cpp's ``audio_ctx`` for it (empty for a 30 s model).
    """

    format: str = "ggml"
    quantization: str = "q8_0"
    file: str = GGML_FILE
    audio_ctx: dict[str, int] = field(default_factory=dict)


def export_ggml(
    model_dir: str | Path,
    out: str | Path,
    quantization: str = "q8_0",
    force: bool = False,
    samples: list[np.ndarray] | None = None,
    validate: bool = True,
) -> GgmlManifest:
    """Write a HF Whisper directory as whisper.cpp's model file and check its transcripts against PyTorch.

    Args:
        model_dir: an imported teacher or a merged student (PyTorch).
        out: the export directory (``ggml-model.bin``, the manifest), built aside and renamed into place.
        quantization: "q8_0" or "f16".
        force: replace an existing ``out``.
        samples: 16 kHz clips for the parity check (default: the two committed parity clips).
        validate: check the transcripts through whisper.cpp (needs pywhispercpp) and record them.

    Returns:
        the manifest, also written to OUT/mkdeploy_export.json.

    Raises:
        MkdError: an unknown quantization; pywhispercpp missing when validating.
        ModelError: an ONNX directory, or an output projection whisper.cpp cannot hold.
    """
    if quantization not in FTYPES:
        raise MkdError(f"--quantization {quantization}: with --format ggml choose one of {', '.join(FTYPES)}")
    model_dir = check_model_dir(model_dir)
    if is_onnx_dir(model_dir):
        raise ModelError(f"{model_dir}: an ONNX export; give the PyTorch model directory")
    if validate:
        GgmlWhisper.check_installed()
    t0 = time.perf_counter()
    tr = WhisperTranscriber.from_pretrained(model_dir, device="cpu")
    model, processor = tr.model, tr.engine.processor
    manifest = GgmlManifest(str(model_dir.resolve()), hash_model_dir(model_dir), quantization=quantization)
    state = {k.removeprefix("model."): v.detach().float().numpy() for k, v in model.state_dict().items()}
    proj = state.pop("proj_out.weight", None)
    if proj is not None and not np.array_equal(proj, state["decoder.embed_tokens.weight"]):
        raise ModelError(
            f"{model_dir}: its output projection is not its token embedding; whisper.cpp computes logits with the "
            "embedding and has no tensor for another projection: export it with --format onnx or ct2"
        )
    cfg = model.config
    if cfg.decoder_layers == 2 and cfg.vocab_size != 51866:
        manifest.warnings.append(
            f"{model_dir.name} has a 2-layer decoder: whisper.cpp takes it for distil-whisper's first release and "
            "forces no-timestamps (segments without timestamps there)"
        )
    buckets = model_buckets(cfg)
    if buckets:
        manifest.audio_ctx = {str(b): audio_ctx(b) for b in buckets}
        manifest.warnings.append(
            f"{model_dir.name} is trained for encoder windows {list(buckets)} s: whisper.cpp encodes them when "
            "called with audio_ctx = 50 per second of the clip's bucket (the manifest's audio_ctx; mkd bench does "
            "this per clip); called without it, whisper.cpp encodes 30 s"
        )
    audios = samples or [a for a, _ in reference_clips()]
    manifest.alignment_heads, manifest.heads_source = student_alignment_heads(tr, audios)

    with atomic_output_dir(out, force=force) as tmp:
        with open(tmp / GGML_FILE, "wb") as f:
            write_ggml(f, cfg, state, _mel_filters(processor, cfg.num_mel_bins), _vocab_bytes(processor), quantization)
        if validate:
            _check_parity(manifest, tr, model_dir, tmp, audios)
        manifest.seconds = round(time.perf_counter() - t0, 1)
        (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def ggml_name(hf_name: str) -> str:
    """openai/whisper's name of an HF Whisper parameter (without the ``model.`` prefix)."""
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    part, rest = hf_name.split(".", 1)  # encoder / decoder
    if rest.startswith("layers."):
        _, i, tail = rest.split(".", 2)
        module, kind = tail.rsplit(".", 1)
        return f"{part}.blocks.{i}.{_LAYER_NAMES[module]}.{kind}"
    return hf_name  # conv1.weight, conv2.bias: the same names


def write_ggml(
    f: BinaryIO, config, state: dict[str, np.ndarray], filters: np.ndarray, vocab: list[bytes], quantization: str
) -> None:
    """whisper.cpp's model file: header, mel filters, vocabulary, tensors.

    Args:
        f: the open file.
        config: the HF WhisperConfig.
        state: HF parameter name (without ``model.``) -> float32 array; the projection left out.
        filters: ``[n_mels, n_fft // 2 + 1]`` mel filter bank.
        vocab: the tokens' bytes, by id (the ordinary tokens up to end-of-text; whisper.cpp names the rest).
        quantization: a key of :data:`FTYPES`.
    """
    ftype = FTYPES[quantization]
    header = ftype + (_QNT_VERSION * 1000 if quantization == "q8_0" else 0)
    f.write(
        struct.pack(
            "<12i",
            GGML_MAGIC,
            config.vocab_size,
            config.max_source_positions,
            config.d_model,
            config.encoder_attention_heads,
            config.encoder_layers,
            config.max_target_positions,
            config.d_model,
            config.decoder_attention_heads,
            config.decoder_layers,
            config.num_mel_bins,
            header,
        )
    )
    f.write(struct.pack("<2i", *filters.shape))
    f.write(np.ascontiguousarray(filters, dtype="<f4").tobytes())
    f.write(struct.pack("<i", len(vocab)))
    for token in vocab:
        f.write(struct.pack("<i", len(token)))
        f.write(token)
    for hf_name, data in state.items():
        name = ggml_name(hf_name)
        if name.endswith(("conv1.bias", "conv2.bias")):
            data = data.reshape(-1, 1)  # whisper.cpp holds the conv biases as [n, 1]
        ttype = _tensor_type(name, data.ndim, quantization)
        f.write(struct.pack("<3i", data.ndim, len(name.encode()), ttype))
        f.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
        f.write(name.encode())
        if ttype == _Q8_0:
            f.write(quantize_q8_0(data))
        else:
            f.write(np.ascontiguousarray(data, dtype="<f2" if ttype == _F16 else "<f4").tobytes())


def _tensor_type(name: str, ndim: int, quantization: str) -> int:
    """The type whisper.cpp allocates the tensor with (it checks the byte count): the file's weight type for
    2-D weights, fp16 convolutions, fp32 for everything else."""
    if "positional_embedding" in name or ndim == 1 or name.endswith(".bias"):
        return _F32
    if ndim == 3:  # conv1.weight, conv2.weight
        return _F16
    return _Q8_0 if quantization == "q8_0" else _F16


def quantize_q8_0(data: np.ndarray) -> bytes:
    """ggml's q8_0 of a 2-D array, row by row: blocks of 32 weights, each an fp16 scale ``d = max|x| / 127``
    then 32 int8 ``round(x / d)`` (half away from zero, as ggml's ``roundf``).

    Raises:
        ModelError: a row length not a multiple of 32 (q8_0 has no partial blocks).
    """
    if data.shape[-1] % _QK8_0:
        raise ModelError(
            f"q8_0 needs rows of a multiple of {_QK8_0} weights, not {data.shape[-1]}: use --quantization f16"
        )
    blocks = np.ascontiguousarray(data, dtype=np.float32).reshape(-1, _QK8_0)
    d = np.abs(blocks).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0)
    x = blocks * inv[:, None]
    q = (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int8)
    out = np.empty(len(blocks), dtype=[("d", "<f2"), ("qs", "i1", _QK8_0)])
    out["d"], out["qs"] = d.astype(np.float16), q
    return out.tobytes()


def _mel_filters(processor, n_mels: int) -> np.ndarray:
    """``[n_mels, 201]``: the filter bank the model's feature extractor uses (Slaney mel, as openai/whisper's
    mel_filters.npz), so whisper.cpp computes the same log-mel features."""
    filters = np.asarray(processor.feature_extractor.mel_filters, dtype=np.float32).T
    if filters.shape[0] != n_mels:
        raise ModelError(f"the feature extractor has {filters.shape[0]} mel bins, the model {n_mels}")
    return filters


def _vocab_bytes(processor) -> list[bytes]:
    """Each ordinary token's bytes by id, up to end-of-text (GPT-2's byte-level alphabet undone); whisper.cpp
    derives the special tokens from the vocabulary size."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode  # GPT-2's byte <-> char table

    decoder = {c: b for b, c in bytes_to_unicode().items()}
    tok = processor.tokenizer
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    by_id = {i: t for t, i in tok.get_vocab().items() if i <= eot}
    return [bytes(decoder.get(c, 0) for c in by_id.get(i, "")) if i in by_id else b"" for i in range(eot + 1)]


def _check_parity(manifest: GgmlManifest, tr: WhisperTranscriber, model_dir: Path, export: Path, audios) -> None:
    """whisper.cpp's greedy texts of the clips against PyTorch's, each in the same encoder window."""
    ref = [t.text for t in tr.transcribe_arrays(audios, scoring_options("en", batch_size=len(audios)))]
    buckets = tuple(int(b) for b in manifest.audio_ctx) or (CHUNK_S,)
    whisper = GgmlWhisper(export, language="en", threads=2, buckets=buckets)
    manifest.record_parity("whisper.cpp", ref, [text for text, _ in whisper.transcribe_batch(audios)], audios)
