"""ONNX Runtime sessions of a Whisper export, GPU first, CPU as a fallback, and the decoder step driven on the
merged decoder's session itself. Used by the ONNX Runtime engine (:mod:`mkdeploy.lean.transcriber`) and by
optimum's loader (:mod:`mkdeploy.transcription.ort`), so both open sessions with the same settings.

onnxruntime-gpu lists CUDA as available even when the CUDA 13 / cuDNN 9 libraries it needs are missing,
and then silently runs on CPU (README, Troubleshooting). So the provider that actually runs is read back from
the session (``get_providers()``) and reported; ``device="cuda"`` fails when it is not CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mkdeploy.errors import MkdError, ModelError

REQUIRED_FILES = ("encoder_model.onnx", "config.json", "preprocessor_config.json")
VARIANTS = ("fp32", "int8", "fp16")


@dataclass
class OrtOptions:
    """Session settings.

    Attributes:
        threads: intra-op threads (0: ONNX Runtime's default, one per physical core).
        allow_spinning: intra-op spin-waiting; off by default because on 2 cores it made a small model
            about 3x slower and slowed PyTorch in the same process (README, Troubleshooting).
        io_binding: bind inputs and outputs to device memory (CUDA only; avoids host copies per step).
        cpu_mem_arena: ONNX Runtime's CPU arena (``enable_cpu_mem_arena``), which keeps freed blocks for
            reuse and grows by doubling: faster allocation, a larger footprint.
        mem_pattern: plan each run's buffers from the first run's shapes (``enable_mem_pattern``); a
            decoder whose sequence length changes every step gains little from it.
        prepacking: repack the int8/fp32 GEMM weights into MLAS's layout at load
            (``session.disable_prepacking`` off): a second, packed copy of each weight matrix.
        encoder_arena: the arena for the encoder's session too (the torch-free runtime only; optimum opens
            both sessions with one setting). Off by default: the encoder's activations are one large block
            per call, which the arena keeps for good. Measured on tiny.en int8, 2 threads, one process per
            setting: 566 MB with it, 321 MB without, at 8% more time per clip (384 against 415 ms).
        benchmarks/ort_memory.py measures each against CTranslate2 in fresh processes.
    """

    threads: int = 0
    allow_spinning: bool = False
    io_binding: bool = True
    cpu_mem_arena: bool = True
    mem_pattern: bool = True
    prepacking: bool = True
    encoder_arena: bool = False

    @classmethod
    def from_memory_flags(cls, flags: str, threads: int = 0) -> OrtOptions:
        """``"no-arena,no-pattern"`` (any of :data:`MEMORY_FLAGS`, ``lean`` for all three, ``encoder-arena``
        to give the torch-free runtime's encoder the arena too) -> options.

        Raises:
            MkdError: an unknown flag (the message lists the known ones).
        """
        opts = cls(threads=threads)
        known = [*MEMORY_FLAGS, "lean", "encoder-arena"]
        for flag in (f.strip() for f in flags.split(",") if f.strip()):
            if flag not in known:
                raise MkdError(f"ONNX Runtime memory option {flag!r}: choose from {', '.join(known)}")
            if flag == "encoder-arena":  # the one switch that turns something on (the lean runtime's)
                opts.encoder_arena = True
                continue
            for name in MEMORY_FLAGS.values() if flag == "lean" else [MEMORY_FLAGS[flag]]:
                setattr(opts, name, False)
        return opts


#: the memory switches by their command-line names (``mkd bench --model NAME=PATH:ort=no-arena,no-prepack``)
MEMORY_FLAGS = {"no-arena": "cpu_mem_arena", "no-pattern": "mem_pattern", "no-prepack": "prepacking"}


def resolve_variant_dir(path: str | Path, variant: str | None = None) -> Path:
    """The directory of one variant of an export: ``path`` itself for fp32, ``path/int8``, ``path/fp16``.

    Raises:
        ModelError: unknown or missing variant, or files missing from the directory.
    """
    path = Path(path)
    if variant not in (None, "fp32"):
        if variant not in VARIANTS:
            raise ModelError(f"unknown ONNX variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        sub = path / variant
        if not sub.is_dir():
            have = [v for v in VARIANTS[1:] if (path / v).is_dir()]
            raise ModelError(
                f"{path}: no {variant} variant (has: fp32{''.join(', ' + h for h in have)}); "
                f"re-export with `mkd export ... --{'quantize int8' if variant == 'int8' else 'fp16'}`"
            )
        path = sub
    if not path.is_dir():
        raise ModelError(f"{path}: no such ONNX export directory; create one with `mkd export MODEL OUT`")
    missing = [f for f in REQUIRED_FILES if not (path / f).exists()]
    if not (path / "decoder_model_merged.onnx").exists() and not (
        (path / "decoder_model.onnx").exists() and (path / "decoder_with_past_model.onnx").exists()
    ):
        missing.append("decoder_model_merged.onnx")
    if missing:
        hint = (
            "it is a PyTorch model directory: use --backend torch, or export it with `mkd export`"
            if (path / "model.safetensors").exists()
            else "re-export with `mkd export MODEL OUT --force`"
        )
        raise ModelError(f"{path}: not a complete ONNX Whisper export (missing {', '.join(missing)}); {hint}")
    return path


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort  # heavy; only the ONNX backend needs it

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        if device == "cuda":
            raise MkdError(
                f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        return ["CPUExecutionProvider"]
    # CUDA and cuDNN installed as pip wheels (nvidia-cublas, nvidia-cudnn-cu13..., e.g. beside a CUDA build
    # of PyTorch) are not on the loader's path; onnxruntime >= 1.21 can preload them from site-packages.
    try:
        ort.preload_dlls()
    except Exception:  # older onnxruntime, or no such wheels: the system libraries are tried as usual
        pass
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session_options(opts: OrtOptions):
    """ONNX Runtime session options with spinning off unless asked for."""
    import onnxruntime as ort  # heavy; only the ONNX backend needs it

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if opts.threads:
        so.intra_op_num_threads = opts.threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.allow_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if opts.allow_spinning else "0")
    so.enable_cpu_mem_arena = opts.cpu_mem_arena
    so.enable_mem_pattern = opts.mem_pattern
    if not opts.prepacking:
        so.add_session_config_entry("session.disable_prepacking", "1")
    so.log_severity_level = 3
    return so


class DecoderStep:
    """One decoder step on the merged decoder's ONNX Runtime session itself: numpy in and out, the KV cache
    kept as ORT values from one step to the next, no wrapper on the hot path (a
    :data:`mkdeploy.lean.greedy.StepFn`).

    optimum's ``ORTDecoderForSeq2Seq`` converts every input and output between torch and numpy and rebuilds
    the past tuple at each token. Here the ``present.*`` outputs are handed back as the next step's
    ``past_key_values.*`` inputs unchanged (``run_with_ort_values``: no copy), the encoder's cross-attention
    cache is computed once (first step) and never requested again, and only the logits come back to numpy.
    Tokens are the same as through optimum (tests/test_export.py). Measured on tiny.en int8, 2 threads
    (benchmarks/results/cpu_profile_tiny.en.md): ~1.2 ms per step outside the session against ~1.5 through
    optimum; the session itself (~9 ms) is most of a step.

    On CUDA the encoder states, the empty caches and every ``present.*`` output stay on the GPU (IOBinding);
    only the ids go up and the logits come down.

    Args:
        session: the ``decoder_model_merged.onnx`` session.
        encoder_hidden_states: ``[batch, frames, d_model]`` numpy array, or an ``OrtValue`` already on the
            session's device.
    """

    def __init__(self, session, encoder_hidden_states) -> None:
        import onnxruntime as ort  # a compiled extension; loaded with the model

        self.session = session
        self.cuda = session.get_providers()[0] == "CUDAExecutionProvider"
        place = ("cuda", 0) if self.cuda else ("cpu", 0)
        self._value = lambda a: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), *place)
        inputs = {i.name: i for i in session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        self._dtype = np.float16 if inputs["encoder_hidden_states"].type == "tensor(float16)" else np.float32
        if isinstance(encoder_hidden_states, np.ndarray):
            self.hidden = self._value(encoder_hidden_states.astype(self._dtype, copy=False))
            batch = encoder_hidden_states.shape[0]
        else:
            self.hidden, batch = encoder_hidden_states, encoder_hidden_states.shape()[0]
        # the first step's empty self-attention cache and placeholder cross-attention cache
        self._empty = {}
        for name in self.past_names:
            _, heads, _, dim = inputs[name].shape
            self._empty[name] = self._value(np.zeros((batch, heads, 0, dim), dtype=self._dtype))
        self._first_outputs = ["logits"] + [n.replace("past_key_values", "present") for n in self.past_names]
        self._step_outputs = ["logits"] + [
            n.replace("past_key_values", "present") for n in self.past_names if ".decoder." in n
        ]
        self._flags = {b: ort.OrtValue.ortvalue_from_numpy(np.array([b])) for b in (False, True)}

    def __call__(self, ids: np.ndarray, past):
        """``ids`` ``[batch, new]`` (int64) and the previous step's cache (None at first) -> (logits
        ``[batch, new, vocab]``, the cache for the next step)."""
        import onnxruntime as ort  # a compiled extension; loaded with the model

        first = past is None
        feeds = {
            "input_ids": ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
            "encoder_hidden_states": self.hidden,
            "use_cache_branch": self._flags[not first],
        }
        feeds.update(self._empty if first else past)
        names = self._first_outputs if first else self._step_outputs
        if self.cuda:
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_output("logits", "cpu")
            for name in names[1:]:
                binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(binding)
            outs = binding.get_outputs()
        else:
            outs = self.session.run_with_ort_values(names, feeds)
        cache = {} if first else dict(past)
        for name, value in zip(names[1:], outs[1:]):
            cache[name.replace("present", "past_key_values")] = value
        return outs[0].numpy(), cache

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Every position's logits of a teacher-forced pass (the no-cache branch; a :data:`LogitsFn`)."""
        return self(ids, None)[0]
