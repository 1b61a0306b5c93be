"""A Whisper export's tokens without transformers: the ``tokenizers`` library on the export's
tokenizer.json, and the special ids, suppression lists and language table of its generation_config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mkdeploy.errors import ModelError

#: openai/whisper gives a previous-text prompt at most half of the 448-token context, less one
PROMPT_TOKENS_MAX = 223


@dataclass
class Vocabulary:
    """What decoding needs of a model's tokens (the attribute names are a generation config's, so the loops
    of :mod:`mkdeploy.lean.greedy` take this where they take transformers' ``GenerationConfig``).

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` of the export's tokenizer.json.
        eos_token_id: ``<|endoftext|>``.
        suppress_tokens: masked at every step.
        begin_suppress_tokens: masked at the first generated position.
        no_timestamps_token_id: ``<|notimestamps|>``; the timestamps follow it (``<|0.00|>`` is the next id).
        lang_to_id: ``<|en|>`` -> id for a multilingual model (empty for an ``.en`` one).
        task_to_id: ``transcribe`` / ``translate`` -> id.
        is_multilingual: the model has language and task tokens.
    """

    tokenizer: object
    eos_token_id: int
    sot: int
    no_timestamps_token_id: int
    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)
    lang_to_id: dict[str, int] = field(default_factory=dict)
    task_to_id: dict[str, int] = field(default_factory=dict)
    is_multilingual: bool = False
    prev_sot: int | None = None

    @classmethod
    def from_dir(cls, path: Path) -> Vocabulary:
        """Read ``tokenizer.json`` and ``generation_config.json`` of an export directory.

        Raises:
            ModelError: a file is missing.
        """
        from tokenizers import Tokenizer  # a compiled extension; loaded with the model

        missing = [n for n in ("tokenizer.json", "generation_config.json") if not (path / n).exists()]
        if missing:
            raise ModelError(f"{path}: missing {', '.join(missing)}; re-export with `mkd export MODEL OUT --force`")
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        gen = json.loads((path / "generation_config.json").read_text())
        eos = gen["eos_token_id"]
        multilingual = bool(gen.get("is_multilingual") and gen.get("lang_to_id"))

        def tid(name: str) -> int:
            found = tok.token_to_id(name)
            if found is None:
                raise ModelError(f"{path}: tokenizer.json has no {name}; re-export with `mkd export MODEL OUT --force`")
            return int(found)

        return cls(
            tokenizer=tok,
            eos_token_id=int(eos[0] if isinstance(eos, list) else eos),
            sot=int(gen.get("decoder_start_token_id") or tid("<|startoftranscript|>")),
            no_timestamps_token_id=int(gen.get("no_timestamps_token_id") or tid("<|notimestamps|>")),
            suppress_tokens=list(gen.get("suppress_tokens") or []),
            begin_suppress_tokens=list(gen.get("begin_suppress_tokens") or []),
            lang_to_id={k: int(v) for k, v in (gen.get("lang_to_id") or {}).items()} if multilingual else {},
            task_to_id={k: int(v) for k, v in (gen.get("task_to_id") or {}).items()},
            is_multilingual=multilingual,
            prev_sot=tok.token_to_id("<|startofprev|>"),
        )

    @property
    def timestamp_begin(self) -> int:
        """``<|0.00|>``."""
        return self.no_timestamps_token_id + 1

    @property
    def no_speech(self) -> int:
        """``<|nocaptions|>`` (``<|nospeech|>`` in large-v3): the id just below ``<|notimestamps|>``, as
        transformers' ``WhisperNoSpeechDetection`` takes it."""
        return self.no_timestamps_token_id - 1

    def prompt(self, language: str | None = "en", task: str = "transcribe", timestamps: bool = False) -> list[int]:
        """<|startoftranscript|> [<|lang|> <|task|>] [<|notimestamps|>], as ``generate`` builds it."""
        ids = [self.sot]
        if self.is_multilingual:
            ids += [self.lang_to_id[f"<|{language or 'en'}|>"], self.task_to_id[task]]
        return ids if timestamps else [*ids, self.no_timestamps_token_id]

    def previous_text(self, text: str) -> list[int]:
        """``<|startofprev|>`` and the last :data:`PROMPT_TOKENS_MAX` tokens of `` text`` (openai/whisper's
        ``initial_prompt``), to go before :meth:`prompt`."""
        if self.prev_sot is None:
            raise ModelError("this model's tokenizer has no <|startofprev|>: it cannot take a prompt")
        ids = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids  # type: ignore[attr-defined]
        return [self.prev_sot, *ids[-PROMPT_TOKENS_MAX:]]

    def text_ids(self, ids: list[int]) -> list[int]:
        """The text tokens of ``ids`` (special and timestamp tokens dropped)."""
        return [int(t) for t in ids if int(t) < self.eos_token_id]

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, special and timestamp tokens skipped."""
        return self.tokenizer.decode(self.text_ids(ids), skip_special_tokens=True)  # type: ignore[attr-defined]
