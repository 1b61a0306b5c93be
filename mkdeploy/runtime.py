"""Transcription with a Whisper model on PyTorch or ONNX Runtime.

Both backends drive the same Hugging Face ``generate`` (optimum's ``ORTModelForSpeechSeq2Seq`` reuses
Whisper's generation mixin), so decoding options, long-form handling and outputs are identical and an fp32
ONNX export is token-identical to its PyTorch source.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

from mkdeploy.audio import SAMPLE_RATE, SILENCE_PEAK, load_audio_with_info
from mkdeploy.constants import TIME_PRECISION_S
from mkdeploy.decoding import (
    SpeechScore,
    decoder_prompt,
    greedy_decode,
    greedy_decode_timestamps,
    no_speech_token,
    ort_logits,
    ort_step,
    score_speech,
    torch_logits,
    torch_step,
)
from mkdeploy.errors import AudioError, MkdError, ModelError
from mkdeploy.models.dirs import check_model_dir, is_onnx_dir
from mkdeploy.models.student import load_whisper
from mkdeploy.models.window import (
    FULL_WINDOW_S,
    ONNX_DYNAMIC_FRAMES_ATTR,
    WindowConfig,
    enable_encoder_windows,
    model_buckets,
    window_frames,
)
from mkdeploy.ort import OrtOptions, load_ort_model
from mkdeploy.results import Segment, Transcription
from mkdeploy.static_decoder import StaticGreedyDecoder
from mkdeploy.vad import has_speech

logger = logging.getLogger(__name__)

#: Samples in one Whisper window (30 s).
WINDOW_SAMPLES = 30 * SAMPLE_RATE

Backend = Literal["auto", "torch", "onnx"]
Device = Literal["auto", "cuda", "cpu"]


@dataclass
class TranscriptionOptions:
    """Decoding options shared by both backends.

    Attributes:
        language: language code for multilingual models ("en" by default); ignored by ``.en`` models.
        task: "transcribe" or "translate" (multilingual models only).
        batch_size: clips decoded together.
        return_timestamps: predict timestamp tokens (segments with times); needed for audio over 30 s.
        num_beams: 1 is greedy.
        max_new_tokens: cap per 30 s window (None: from the clip's length, see below).
        max_tokens_per_second: for clips under 30 s with no max_new_tokens, the cap is this many tokens
            per second of the longest clip in the batch, plus 20. Speech runs at about 4 tokens/s; a
            repetition loop ("lo lo lo ...", seen from base on noisy speech) otherwise runs to 448 tokens.
        compression_ratio_threshold: Whisper's loop detector (HF computes it on token bytes; 1.35 is its
            documented equivalent of openai/whisper's 2.4): an output that compresses better than this is
            decoded again at the next temperature of ``temperatures``. Greedy output that passes is kept
            as is, so normal clips stay deterministic. None turns the fallback off.
        temperatures: the fallback ladder (openai/whisper's default).
        encoder_buckets: encoder windows in seconds (see :mod:`mkdeploy.models.window`): each batch is
            encoded in the smallest that holds its longest clip, audio over 30 s in 30 s windows. None
            uses the model's own (a windowed student's config names them; other models use 30 s only);
            ``(30,)`` forces Whisper's 30 s window; shorter buckets on a model not trained for them trim
            its window untrained, as whisper.cpp's ``audio_ctx`` does, and cost accuracy.
        fast_greedy: greedy decoding without timestamps of clips up to 30 s runs a lean loop
            (:mod:`mkdeploy.decoding`, same tokens as ``generate``, ~3 ms less per token); False uses
            ``generate`` throughout.
        no_speech_threshold: openai/whisper's no-speech gate: a clip whose ``<|nocaptions|>`` probability
            is above this and whose average token log-probability is below ``logprob_threshold`` comes
            back empty (``gate="no_speech"``). None turns it off. Costs one teacher-forced decoder pass.
        logprob_threshold: see ``no_speech_threshold`` (openai/whisper's -1.0).
        vad_filter: run Silero VAD first (:mod:`mkdeploy.vad`, the ``[serve]`` extra) and return clips
            without detected speech empty, undecoded (``gate="vad"``). Catches noise and hum that the
            no-speech gate lets through.
        initial_prompt: text given to the decoder as previous context (``<|startofprev|>``), as
            openai/whisper's ``initial_prompt`` and the OpenAI API's ``prompt``.
        static_decoder: greedy decoding of PyTorch models on CUDA runs the static-cache step of
            :mod:`mkdeploy.static_decoder`, captured as a CUDA graph (same tokens, without a kernel launch
            per operation); None: on for PyTorch on CUDA, off elsewhere (on CPU it gives the same tokens; a
            speed gain there is not measured).
    """

    language: str | None = "en"
    task: str = "transcribe"
    batch_size: int = 8
    return_timestamps: bool = True
    num_beams: int = 1
    max_new_tokens: int | None = None
    max_tokens_per_second: float = 8.0
    compression_ratio_threshold: float | None = 1.35
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    encoder_buckets: tuple[int, ...] | None = None
    fast_greedy: bool = True
    no_speech_threshold: float | None = 0.6
    logprob_threshold: float | None = -1.0
    vad_filter: bool = False
    initial_prompt: str | None = None
    static_decoder: bool | None = None


@dataclass
class FileFailure:
    """An input that could not be transcribed, with a one-line reason naming the file."""

    path: str
    reason: str


def resolve_device(device: Device | str) -> str:
    import torch  # heavy; imported on use so the core import stays light

    if device not in ("auto", "cuda", "cpu"):
        raise MkdError(f"--device {device}: choose auto, cuda or cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MkdError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu or auto")
    return device


def set_torch_threads(threads: int) -> None:
    """PyTorch's intra-op threads for this process (0 leaves its default: one per core)."""
    if threads:
        import torch  # heavy; imported on use so the core import stays light

        torch.set_num_threads(threads)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The PyTorch dtype for ``--dtype`` on ``device`` ("auto": float16 on CUDA, float32 on CPU)."""
    import torch  # heavy; imported on use so the core import stays light

    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    if dtype not in names:
        raise MkdError(f"--dtype {dtype}: choose auto, float32, float16 or bfloat16")
    return names[dtype]


class WhisperTranscriber:
    """Batched Whisper transcription (faster-whisper's ``WhisperModel`` in spirit).

    Args:
        model: a ``WhisperForConditionalGeneration`` or an optimum ``ORTModelForSpeechSeq2Seq``.
        processor: the model's ``WhisperProcessor``.
        backend: "torch" or "onnx" (for reports).
        device: "cpu" or "cuda".
        provider: the ONNX Runtime provider actually in use (None for PyTorch).
    """

    def __init__(self, model, processor, backend: str, device: str, provider: str | None = None, path: str = ""):
        self.model = model
        self.processor = processor
        self.backend = backend
        self.device = device
        self.provider = provider
        self.path = str(path)
        gen = model.generation_config
        self.multilingual = bool(getattr(gen, "is_multilingual", False) and getattr(gen, "lang_to_id", None))
        #: the windows the model was trained for (None: an ordinary 30 s model)
        self.model_buckets = model_buckets(model.config)
        if backend == "torch":
            enable_encoder_windows(model)
            self.short_windows = True
        else:
            # an export's encoder takes short windows only if it was traced with a dynamic frame axis
            self.short_windows = bool(getattr(model.config, ONNX_DYNAMIC_FRAMES_ATTR, False))
        self.windows()  # a windowed student whose export takes 30 s windows only fails here, not mid-batch
        self._static: StaticGreedyDecoder | None = None
        #: encoder states by a digest of their input features; None: no memo. Set by a caller whose
        #: encoder cannot change between calls (the trainer scoring dev with a frozen encoder, where
        #: the encoder was half of each evaluation's time)
        self.states_memo: dict[str, Any] | None = None

    def windows(self, options: TranscriptionOptions | None = None):
        """The :class:`~mkdeploy.models.window.WindowConfig` used with ``options``."""

        buckets = (options.encoder_buckets if options else None) or self.model_buckets or (FULL_WINDOW_S,)
        win = WindowConfig(tuple(buckets))
        if win.windowed and not self.short_windows:
            raise ModelError(
                f"{self.path or 'model'}: this ONNX export's encoder takes 30 s windows only; re-export "
                "it with `mkd export` to use encoder buckets"
            )
        return win

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: Backend | str = "auto",
        device: Device | str = "auto",
        threads: int = 0,
        dtype: str = "auto",
        **onnx_kwargs,
    ) -> WhisperTranscriber:
        """Load a HF Whisper directory (PyTorch) or an ONNX export (ONNX Runtime).

        Args:
            path: model directory.
            backend: "auto" picks ONNX for an export directory, PyTorch otherwise.
            device: "auto" (GPU when usable), "cuda" (fail if it cannot run there) or "cpu".
            threads: CPU threads for PyTorch (process-wide) and ONNX Runtime's intra-op pool (0: their
                defaults).
            dtype: PyTorch weights: "float32", "float16", "bfloat16" or "auto" (float16 on CUDA, float32
                on CPU). An ONNX export's precision is its variant folder.
            onnx_kwargs: passed to :func:`mkdeploy.ort.load_ort_model` (e.g. ``variant``).
        """
        path = check_model_dir(path)
        set_torch_threads(threads)
        if backend == "auto":
            backend = "onnx" if is_onnx_dir(path) else "torch"
        if backend == "onnx":
            if threads and "options" not in onnx_kwargs:
                onnx_kwargs["options"] = OrtOptions(threads=threads)
            model, processor, provider = load_ort_model(path, device=device, **onnx_kwargs)
            return cls(
                model,
                processor,
                "onnx",
                "cuda" if provider == "CUDAExecutionProvider" else "cpu",
                provider,
                path=str(path),
            )

        if is_onnx_dir(path) and not (path / "model.safetensors").exists():
            raise ModelError(f"{path}: an ONNX export; use --backend onnx (or auto)")
        dev = resolve_device(device)
        model, processor = load_whisper(path)
        model.to(dev, dtype=resolve_dtype(dtype, dev)).eval()
        return cls(model, processor, "torch", dev, path=str(path))

    # -- decoding -------------------------------------------------------------------------------
    def _generate_kwargs(self, options: TranscriptionOptions, long_form: bool = False) -> dict:
        kw: dict = dict(return_timestamps=options.return_timestamps, num_beams=options.num_beams)
        if options.initial_prompt:
            kw["prompt_ids"] = self.processor.get_prompt_ids(options.initial_prompt, return_tensors="pt").to(
                self.device
            )
        if self.multilingual:
            kw.update(language=options.language or "en", task=options.task)
        if options.max_new_tokens:
            kw["max_new_tokens"] = options.max_new_tokens
        if options.compression_ratio_threshold:
            kw.update(
                temperature=tuple(options.temperatures), compression_ratio_threshold=options.compression_ratio_threshold
            )
            if long_form and options.no_speech_threshold is not None:
                # generate applies the same no-speech test to each 30 s window of long-form audio
                kw.update(no_speech_threshold=options.no_speech_threshold, logprob_threshold=options.logprob_threshold)
        elif options.temperatures[:1] != (0.0,):
            kw["temperature"] = options.temperatures[0]
        return kw

    def _generate(self, **kw):
        """``model.generate`` with torch's generator seeded for the call: the temperature fallback samples,
        and a clip's transcript must not depend on what the process did before (two runs of the demo must
        agree; measured: the same dev set scored 20.83% and 20.39% in two processes before this)."""
        import torch  # heavy; imported on use so the core import stays light

        devices = [torch.cuda.current_device()] if self.device == "cuda" and torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            return self.model.generate(**kw)

    def _features(self, audios: Sequence[np.ndarray]):
        fe = self.processor.feature_extractor
        n_window = fe.n_samples
        if max(len(a) for a in audios) > n_window:
            # Long-form: keep every sample; generate() walks the audio window by window (seeking on the
            # last timestamp), so nothing past 30 s is dropped.
            inputs = fe(
                list(audios),
                sampling_rate=SAMPLE_RATE,
                return_tensors="pt",
                truncation=False,
                padding="longest",
                return_attention_mask=True,
            )
            if inputs.input_features.shape[-1] < fe.nb_max_frames:
                inputs = fe(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
        else:
            inputs = fe(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
        return inputs.input_features, inputs.attention_mask

    def transcribe_arrays(
        self, audios: Sequence[np.ndarray], options: TranscriptionOptions | None = None
    ) -> list[Transcription]:
        """Transcribe 16 kHz mono float32 arrays, ``options.batch_size`` at a time.

        Returns:
            One :class:`Transcription` per input, in input order.
        """

        options = options or TranscriptionOptions()
        if not options.return_timestamps and any(len(a) > WINDOW_SAMPLES for a in audios):
            options = TranscriptionOptions(**{**asdict(options), "return_timestamps": True})
        win = self.windows(options)
        results: list[Transcription | None] = [pre_gate(a, options) for a in audios]
        # Batches of similar length waste less padding (long-form pads every clip to the longest), and a
        # batch never mixes encoder windows: each clip is encoded in the smallest bucket that holds it.
        order = sorted((i for i in range(len(audios)) if results[i] is None), key=lambda i: len(audios[i]))
        groups: dict[int, list[int]] = {}
        for i in order:
            groups.setdefault(win.bucket_for(len(audios[i]) / SAMPLE_RATE), []).append(i)
        for bucket, members in groups.items():
            for start in range(0, len(members), options.batch_size):
                idx = members[start : start + options.batch_size]
                for i, t in zip(idx, self._transcribe_batch([audios[i] for i in idx], options, bucket)):
                    results[i] = t
        return [r for r in results if r is not None]

    def encode(self, features):
        """Run the encoder alone on mel features of any window; returns a ``BaseModelOutput``."""
        import torch  # heavy; imported on use so the core import stays light

        key = None
        if self.states_memo is not None:
            key = hashlib.sha1(features.detach().cpu().numpy().tobytes()).hexdigest() + str(tuple(features.shape))
            if key in self.states_memo:
                return self.states_memo[key]
        with torch.inference_mode():
            if self.backend == "torch":
                out = self.model.get_encoder()(features)
            else:
                out = self.model.encoder(input_features=features, attention_mask=None)
        if key is not None and self.states_memo is not None:
            self.states_memo[key] = out
        return out

    def _batch_inputs(self, audios: list[np.ndarray], window_s: int) -> tuple[dict, bool]:
        """Mel features (and the long-form attention mask) on the model's device; whether the batch is
        encoded in a window shorter than 30 s."""
        import torch  # heavy; imported on use so the core import stays light

        short = window_s < FULL_WINDOW_S and max(len(a) for a in audios) <= window_s * SAMPLE_RATE
        if short:
            # pad to the window, not to 30 s: the encoder's cost follows its input length
            fe = self.processor.feature_extractor
            features = fe(
                list(audios),
                sampling_rate=SAMPLE_RATE,
                return_tensors="pt",
                padding="max_length",
                max_length=window_s * SAMPLE_RATE,
                truncation=True,
            ).input_features
            mask = None
        else:
            features, mask = self._features(audios)
        dtype = getattr(self.model, "dtype", torch.float32)
        features = features.to(self.device, dtype=dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32)
        inputs = {"input_features": features}
        if mask is not None:
            inputs["attention_mask"] = mask.to(self.device)
        return inputs, short

    def _transcribe_batch(
        self, audios: list[np.ndarray], options: TranscriptionOptions, window_s: int = 30
    ) -> list[Transcription]:
        import torch  # heavy; imported on use so the core import stays light

        longest = max(len(a) for a in audios)
        inputs, short = self._batch_inputs(audios, window_s)
        kw = self._generate_kwargs(options, long_form=longest > WINDOW_SAMPLES)
        if "max_new_tokens" not in kw and longest <= WINDOW_SAMPLES:
            cap = int(options.max_tokens_per_second * longest / SAMPLE_RATE) + 20
            kw["max_new_tokens"] = min(cap, self.model.config.max_target_positions // 2 - 4)
        greedy = (
            options.fast_greedy
            and not options.return_timestamps
            and options.num_beams == 1
            and not options.initial_prompt
            and options.temperatures[:1] == (0.0,)
            and longest <= WINDOW_SAMPLES
        )
        states = None
        known: list[SpeechScore | None] = [None] * len(audios)
        with torch.inference_mode(), _segment_frames(self.model, window_s if short else FULL_WINDOW_S):
            if options.return_timestamps:
                out = self._generate(**inputs, return_segments=True, **kw)
                sequences, all_segments = out["sequences"], out["segments"]
            elif greedy:
                sequences, states, known = self._greedy(inputs, options, kw)
                all_segments = [None] * len(audios)
            else:
                sequences = self._generate(**inputs, **kw)
                all_segments = [None] * len(audios)
            results = self._results(audios, sequences, all_segments)
            # long-form audio is gated window by window inside generate (see _generate_kwargs)
            if options.no_speech_threshold is not None and longest <= WINDOW_SAMPLES:
                if states is None:
                    states = self.encode(inputs["input_features"]).last_hidden_state
                # a score read during decoding holds for the tokens it was read on (a special token the
                # results drop would change them)
                known = [
                    k if k is not None and r.tokens == seq.tolist() else None
                    for k, r, seq in zip(known, results, sequences)
                ]
                self._gate(results, states, options, known)
        return results

    def decode_timestamped(self, audios: Sequence[np.ndarray], options: TranscriptionOptions) -> list[list[Segment]]:
        """One greedy pass with timestamp tokens over clips of at most 30 s, parsed into segments.

        ``generate`` with timestamps took 6.9-22 s for one packed 27 s window of tiny.en int8 on 2 cores
        (it walks the window segment by segment); this runs the lean loop of :mod:`mkdeploy.decoding` with
        openai/whisper's timestamp rules, one pass. No temperature fallback: the caller checks the result
        (mkdeploy/packing.py decodes a window it cannot attribute again, clip by clip).
        """
        import torch  # heavy; imported on use so the core import stays light

        if max(len(a) for a in audios) > WINDOW_SAMPLES:
            raise ValueError("decode_timestamped takes clips of at most 30 s")
        inputs, _ = self._batch_inputs(list(audios), 30)
        tok = self.processor.tokenizer
        gen = self.model.generation_config
        ts_begin = tok.convert_tokens_to_ids("<|notimestamps|>") + 1
        prompt = decoder_prompt(tok, gen, options.language if self.multilingual else None, options.task)[:-1]
        with torch.inference_mode():
            states = self.encode(inputs["input_features"]).last_hidden_state
            step = (torch_step if self.backend == "torch" else ort_step)(self.model, states)
            limit = self.model.config.max_target_positions // 2 - 4
            sequences = greedy_decode_timestamps(step, len(audios), prompt, gen, limit, ts_begin, states.device)
        special = set(tok.all_special_ids)
        return [_timestamp_segments(seq, ts_begin, special, tok) for seq in sequences]

    def _results(self, audios: list[np.ndarray], sequences, all_segments) -> list[Transcription]:
        """Token sequences (and generate's segments) to :class:`Transcription` objects, special and
        timestamp tokens removed."""
        tok = self.processor.tokenizer
        special = set(tok.all_special_ids)
        ts_begin = tok.convert_tokens_to_ids("<|notimestamps|>") + 1
        results = []
        for audio, seq, segs in zip(audios, sequences, all_segments):
            ids = [int(t) for t in seq.tolist() if int(t) not in special and int(t) < ts_begin]
            segments = []
            for s in segs or []:
                stoks = [int(t) for t in s["tokens"].tolist() if int(t) not in special and int(t) < ts_begin]
                text = tok.decode(stoks, skip_special_tokens=True)
                if text.strip():
                    segments.append(
                        Segment(round(float(s["start"]), 3), round(float(s["end"]), 3), text.strip(), stoks)
                    )
            text = tok.decode(ids, skip_special_tokens=True).strip()
            results.append(
                Transcription(path="", text=text, segments=segments, duration=len(audio) / SAMPLE_RATE, tokens=ids)
            )
        return results

    def _gate(
        self,
        results: list[Transcription],
        states,
        options: TranscriptionOptions,
        known: Sequence[SpeechScore | None] | None = None,
    ) -> None:
        """openai/whisper's no-speech test (``transcribe()`` in its transcribe.py): a clip is empty when
        ``no_speech_prob > no_speech_threshold`` unless ``avg_logprob > logprob_threshold``. Scores are
        recorded on every result; the gate empties text, segments and tokens in place. ``known``: scores
        already read while decoding (None where not); the others take one teacher-forced pass."""

        gen = self.model.generation_config
        tok = self.processor.tokenizer
        scores: list[SpeechScore | None] = list(known) if known is not None else [None] * len(results)
        todo = [i for i, sc in enumerate(scores) if sc is None]
        if todo:
            prompt = decoder_prompt(tok, gen, options.language if self.multilingual else None, options.task)
            logits_fn = (torch_logits if self.backend == "torch" else ort_logits)(self.model, states[todo])
            found = score_speech(
                logits_fn, prompt, [results[i].tokens for i in todo], gen, no_speech_token(tok, gen), states.device
            )
            for i, fresh in zip(todo, found):
                scores[i] = fresh
        assert options.no_speech_threshold is not None
        for r, sc in zip(results, scores):
            assert sc is not None
            r.no_speech_prob, r.avg_logprob = sc.no_speech_prob, sc.avg_logprob
            skip = sc.no_speech_prob > options.no_speech_threshold
            if options.logprob_threshold is not None and sc.avg_logprob > options.logprob_threshold:
                skip = False
            if skip:
                r.text, r.segments, r.tokens, r.gate = "", [], [], "no_speech"

    def _greedy(
        self, inputs: dict, options: TranscriptionOptions, kw: dict
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[SpeechScore | None]]:
        """Greedy, timestamp-free decoding through :func:`mkdeploy.decoding.greedy_decode`; clips whose
        output fails the compression-ratio check are decoded again by ``generate`` (temperature fallback).

        Returns:
            (token sequences, the encoder states, reused by the no-speech gate, and the no-speech scores
            read while decoding: None for a clip decoded again or cut at the cap).
        """
        import torch  # heavy; imported on use so the core import stays light

        states = self.encode(inputs["input_features"]).last_hidden_state
        gen = self.model.generation_config
        prompt = decoder_prompt(
            self.processor.tokenizer, gen, options.language if self.multilingual else None, options.task
        )
        static = self.backend == "torch" and (
            options.static_decoder if options.static_decoder is not None else self.device == "cuda"
        )
        if static:
            need = len(prompt) + kw["max_new_tokens"]
            if self._static is None or self._static.max_len < need:
                # one buffer length for the usual caps, so one captured graph per batch bucket serves them all
                length = max(need, self.model.config.max_target_positions // 2 + 8)
                self._static = StaticGreedyDecoder(self.model, gen, length)
            results = self._static.decode(states, prompt, kw["max_new_tokens"], options.compression_ratio_threshold)
        else:
            step = (torch_step if self.backend == "torch" else ort_step)(self.model, states)
            results = greedy_decode(
                step,
                states.shape[0],
                prompt,
                gen,
                kw["max_new_tokens"],
                self.model.config.vocab_size,
                options.compression_ratio_threshold,
                device=states.device,
                no_speech_id=(
                    no_speech_token(self.processor.tokenizer, gen) if options.no_speech_threshold is not None else None
                ),
            )
        sequences = [torch.tensor(r.tokens, dtype=torch.long) for r in results]
        known = [r.score for r in results]
        redo = [i for i, r in enumerate(results) if r.needs_fallback]
        if redo:
            sub = {k: v[redo] for k, v in inputs.items()}
            for i, seq in zip(redo, self._generate(**sub, **kw)):
                sequences[i], known[i] = seq, None
        return sequences, states, known

    def transcribe_files(
        self,
        paths: Sequence[str | Path],
        options: TranscriptionOptions | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> tuple[list[Transcription], list[FileFailure]]:
        """Transcribe files; bad files are reported, never fatal to the rest.

        Args:
            paths: audio files.
            options: decoding options.
            on_progress: called with the number of files just finished.

        Returns:
            (transcriptions of the readable files in input order, failures with one-line reasons).
        """
        options = options or TranscriptionOptions()
        done: list[Transcription] = []
        failures: list[FileFailure] = []
        pending: list[tuple[str, np.ndarray, float]] = []

        def flush() -> None:
            if not pending:
                return
            for (p, _, dur), t in zip(pending, self.transcribe_arrays([a for _, a, _ in pending], options)):
                t.path, t.duration = p, dur
                done.append(t)
            if on_progress:
                on_progress(len(pending))
            pending.clear()

        # Batches are fixed by position: inputs [k * batch_size, (k + 1) * batch_size), less the silent and
        # unreadable ones. A transcript then depends only on its input's neighbours (an int8 model's dynamic
        # quantisation scales by the whole batch), and `mkd transcribe --ray` forms the same batches.
        for i, p in enumerate(paths):
            if i % options.batch_size == 0:
                flush()
            try:
                audio, info = load_audio_with_info(p)
            except AudioError as exc:
                failures.append(FileFailure(str(p), str(exc)))
                if on_progress:
                    on_progress(1)
                continue
            if info.silent:
                # Whisper hallucinates whole sentences on silence (README, Troubleshooting): report nothing instead.
                done.append(Transcription.of_silence(str(p), info.duration))
                if on_progress:
                    on_progress(1)
                continue
            pending.append((str(p), audio, info.duration))
        flush()
        order = {str(p): i for i, p in enumerate(paths)}
        done.sort(key=lambda t: order.get(t.path, 0))
        return done, failures


def pre_gate(audio: np.ndarray, options: TranscriptionOptions) -> Transcription | None:
    """An empty result for a clip that must not be decoded (digital silence; no speech by the VAD when
    ``options.vad_filter``), else None. Whisper writes a caption for anything it hears (mkdeploy/vad.py)."""
    duration = len(audio) / SAMPLE_RATE
    if not len(audio) or float(np.abs(audio).max()) < SILENCE_PEAK:
        return Transcription("", "", [], duration, silent=True, gate="silence")
    if options.vad_filter:
        if not has_speech(audio):
            return Transcription("", "", [], duration, gate="vad")
    return None


def _timestamp_segments(ids: list[int], ts_begin: int, special: set[int], tok) -> list[Segment]:
    """Segments from a token sequence with inline timestamps (``<|t0|> text <|t1|>``, 0.02 s a step)."""
    segments: list[Segment] = []
    start: float | None = None
    text: list[int] = []
    for t in ids:
        if t >= ts_begin:
            time_s = round((t - ts_begin) * TIME_PRECISION_S, 3)
            if start is None:
                start = time_s
            else:
                if text:
                    segments.append(Segment(start, time_s, tok.decode(text, skip_special_tokens=True).strip(), text))
                start, text = None, []
        elif t not in special and start is not None:
            text.append(t)
    if start is not None and text:  # a last segment without its closing timestamp
        segments.append(Segment(start, start, tok.decode(text, skip_special_tokens=True).strip(), text))
    return [s for s in segments if s.text]


@contextmanager
def _segment_frames(model, window_s: int):
    """Let ``generate`` work on a short window: it pads input features to 2 × ``config.max_source_positions``
    mel frames (its segment length, also used by the temperature fallback and timestamps), so the config
    names the window while the call runs. The encoder's own length check reads its attribute, not the
    config (models/window.py), and the position table is untouched."""

    config = model.config
    full = config.max_source_positions
    config.max_source_positions = min(full, window_frames(window_s) // 2)  # encoder frames: mel frames / 2
    try:
        yield
    finally:
        config.max_source_positions = full
