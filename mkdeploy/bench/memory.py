"""Resident memory a model adds, measured in a fresh process so load order does not matter."""

from __future__ import annotations

import numpy as np

from mkdeploy.bench.specs import ModelSpec, load_runner
from mkdeploy.errors import MkdError


def rss_mb() -> float:
    import psutil  # only the bench's memory figures need it

    return psutil.Process().memory_info().rss / 1e6


#: the engines' libraries a fresh process imports before the model is loaded, so the RSS a model adds does
#: not include them (nor depend on which model happened to import them first)
ENGINE_LIBRARIES = ("torch", "transformers", "onnxruntime", "ctranslate2", "pywhispercpp.model")


def _rss_child(conn, spec: ModelSpec, load_args: tuple, first: np.ndarray, warmup: int, whole: bool = False) -> None:
    """In a spawned process: the RSS (MB) that loading ``spec`` and warming it up adds (``whole``: the whole
    process's, nothing imported first), and the wall-clock time its first transcript came back."""
    import importlib
    import time

    try:
        for lib in () if whole else ENGINE_LIBRARIES:
            try:
                importlib.import_module(lib)
            except ImportError:
                pass
        before = 0.0 if whole else rss_mb()
        runner = load_runner(spec, *load_args)
        runner.transcribe(first)
        first_at = time.time()
        for _ in range(max(1, warmup) - 1):
            runner.transcribe(first)
        conn.send(("ok", (rss_mb() - before, first_at)))
    except Exception as e:  # reported to the parent, which raises it with the model's name
        conn.send(("error", f"{type(e).__name__}: {e}"))


def fresh_rss_mb(
    spec: ModelSpec, load_args: tuple, first: np.ndarray, warmup: int, timeout_s: float = 900, whole: bool = False
) -> tuple[float, float]:
    """Resident memory a model adds to a fresh process (spawned, the engines' libraries imported first):
    in the bench's own process the figure depends on load order, since memory a model frees stays with
    the allocator and the next model reuses it (ONNX models loaded after PyTorch ones read 0-1 MB).
    With ``whole``, nothing is imported first and the figure is the whole process's, the libraries the model
    needs included: what a server running only this model holds.

    Returns:
        (RSS in MB, cold start: seconds from starting the process to its first transcript of ``first``).

    Args:
        spec: the model.
        load_args: :func:`load_runner`'s arguments after ``spec``.
        first: the warm-up clip.
        warmup: warm-up passes (at least one, so lazily built kernels and caches are counted).
        timeout_s: how long the child may take.
    """
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")  # fork would inherit this process's memory and threads
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_rss_child, args=(send, spec, load_args, first, warmup, whole), daemon=True)
    started = time.time()
    child.start()
    send.close()
    try:
        if not recv.poll(timeout_s):
            raise MkdError(f"--model {spec.name}: measuring its memory took over {timeout_s:.0f} s")
        status, value = recv.recv()
    except EOFError:
        raise MkdError(f"--model {spec.name}: the process measuring its memory died (out of memory?)") from None
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    if status != "ok":
        raise MkdError(f"--model {spec.name}: loading it in a fresh process failed: {value}")
    rss, first_at = value
    return float(rss), float(first_at - started)
