"""The tokenizer and generation config a CTranslate2 Whisper directory lacks or holds damaged, rebuilt for
Hugging Face (:func:`mkdeploy.models.ct2.import_ct2` calls these)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mkdeploy.constants import CHUNK_S, TIME_PRECISION_S
from mkdeploy.errors import ModelError

logger = logging.getLogger(__name__)


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


def build_tokenizer(src: Path, vocab_size: int):
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


def generation_config(ct2_cfg: dict, tokenizer, dims: dict):
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
