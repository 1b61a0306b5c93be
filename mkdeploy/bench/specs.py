"""`mkd bench --model NAME=PATH[:key=value]`: the entries, and the runner each one loads
(PyTorch or ONNX, CTranslate2, whisper.cpp)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mkdeploy.bench.runners import CT2Runner, GgmlRunner, LeanRunner, Runner, WhisperRunner
from mkdeploy.errors import MkdError, ModelError
from mkdeploy.lean.sessions import OrtOptions
from mkdeploy.models.dirs import is_ct2_dir, is_onnx_dir
from mkdeploy.models.ggml import is_ggml_dir
from mkdeploy.models.window import parse_buckets
from mkdeploy.transcription.loading import lean_backend


@dataclass
class ModelSpec:
    """One ``--model NAME=PATH[:buckets=5,10,20,30][:compute_type=int8]`` entry.

    Attributes:
        buckets: encoder windows in seconds for this entry (None: the model's own; ``(30,)`` for Whisper's
            30 s window), so one model can be benched with and without its buckets.
        compute_type: CTranslate2's compute type (``int8``, ``int8_float16``, ``float16``, ``float32``;
            None: ``default``, the type the model was saved in), so faster-whisper's fastest path is the
            yardstick. CTranslate2 entries only.
        ort: ONNX Runtime's memory switches, e.g. ``no-arena,no-prepack`` or ``lean``
            (:meth:`mkdeploy.transcription.ort.OrtOptions.from_memory_flags`; None: its defaults). ONNX entries only.
        backend: ``onnx-lean`` runs an ONNX export on the torch-free runtime (:mod:`mkdeploy.lean`), ``onnx``
            on optimum's; None: ``auto`` (:func:`mkdeploy.transcription.loading.lean_backend`).
    """

    name: str
    path: Path
    buckets: tuple[int, ...] | None = None
    compute_type: str | None = None
    ort: str | None = None
    backend: str | None = None


#: the ``:key=value`` suffixes a --model entry takes
SPEC_KEYS = ("buckets", "compute_type", "ort", "backend")


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``NAME=PATH`` with optional ``:buckets=5,10,20,30`` and ``:compute_type=int8`` suffixes."""

    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise MkdError(f"--model {text!r}: expected NAME=PATH, e.g. --model teacher=models/base")
    path, *pairs = rest.split(":")
    opts: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in SPEC_KEYS or not value:
            raise MkdError(
                f"--model {text!r}: unknown suffix {pair!r}; use :buckets=5,10,20,30, :compute_type=int8 or :ort=lean"
            )
        opts[key] = value
    buckets = parse_buckets(opts["buckets"]) if "buckets" in opts else None
    if "ort" in opts:
        OrtOptions.from_memory_flags(opts["ort"])  # a bad flag fails here, before any model loads
    backend = opts.get("backend")
    if backend not in (None, "onnx", "onnx-lean"):
        raise MkdError(f"--model {text!r}: :backend= takes onnx or onnx-lean")
    return ModelSpec(name, Path(path), buckets, opts.get("compute_type"), opts.get("ort"), backend)


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (empty: no throughput runs)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = [0]
    if any(b < 1 for b in sizes):
        raise MkdError(f"--batch-size {text!r}: expected positive integers such as 1,8,32")
    return sizes


def load_runner(
    spec: ModelSpec,
    device: str,
    language: str,
    max_new_tokens: int | None = None,
    threads: int = 0,
    dtype: str = "auto",
) -> Runner:
    if not spec.path.exists():
        raise ModelError(f"--model {spec.name}={spec.path}: no such directory")
    if is_ggml_dir(spec.path):
        if spec.compute_type or spec.ort:
            raise MkdError(
                f"--model {spec.name}: a whisper.cpp model; its precision is the file's (mkd export --quantization)"
            )
        return GgmlRunner(spec.path, language, max_new_tokens, spec.buckets, threads)
    if is_ct2_dir(spec.path):
        if spec.buckets and spec.buckets != (30,):
            raise MkdError(f"--model {spec.name}: encoder buckets need a PyTorch or ONNX model, not CTranslate2")
        if spec.ort:
            raise MkdError(f"--model {spec.name}: :ort= sets ONNX Runtime's memory options, not CTranslate2's")
        return CT2Runner(spec.path, device, language, max_new_tokens, spec.compute_type, threads)
    if spec.compute_type:
        raise MkdError(
            f"--model {spec.name}: compute_type is CTranslate2's; an ONNX export's precision is its variant folder"
        )
    if spec.ort and not is_onnx_dir(spec.path):
        raise MkdError(f"--model {spec.name}: :ort= sets ONNX Runtime's memory options; {spec.path} is not an export")
    ort = OrtOptions.from_memory_flags(spec.ort) if spec.ort else None  # load_engine adds the threads
    if lean_backend(spec.path, spec.backend or "auto"):
        return LeanRunner(spec.path, device, language, max_new_tokens, spec.buckets, threads, ort)
    return WhisperRunner(spec.path, device, language, max_new_tokens, spec.buckets, threads, dtype, ort)
