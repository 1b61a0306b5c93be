"""Corpus transcription on Ray Data: a manifest (or folder) in, JSONL shards out.

Shard ``k`` holds inputs ``k * shard_size`` to ``(k + 1) * shard_size - 1`` in manifest order, one row per
input (its audio path, text, segments, model, duration; a file that cannot be read gets a row with its
one-line ``error``). A shard is written atomically once all its rows are in, so a shard on disk is whole:
a re-run skips it, and a killed job loses at most the shards in flight. ``job.json`` records what the
shards were made from; a re-run with another model, manifest or options refuses without ``force``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mkdeploy.data import Utterance
from mkdeploy.distributed.cluster import FaultInjection, actor_gpus, connect, stream_results
from mkdeploy.distributed.config import RayConfig
from mkdeploy.errors import AudioError, MkdError, OutputExistsError
from mkdeploy.fsutil import atomic_write_text
from mkdeploy.results import Transcription
from mkdeploy.runtime import TranscriptionOptions

JOB_FILE = "job.json"


@dataclass
class ModelSpec:
    """The model each actor loads (the arguments of ``WhisperTranscriber.from_pretrained``)."""

    path: str
    backend: str = "auto"
    device: str = "auto"
    variant: str | None = None
    threads: int = 0
    dtype: str = "auto"

    def __post_init__(self) -> None:
        self.path = str(self.path)  # a Path from the CLI; the job record is JSON


@dataclass
class ShardJob:
    """What a Ray transcription did.

    Attributes:
        shards: every shard file of the job, in order.
        written: shards written by this call; skipped: shards already on disk.
        rows: inputs transcribed by this call; audio_seconds: their audio; seconds: wall time of the Ray
            stage (actors' model loading included); first_row_s: seconds until the first result arrived
            (Ray and actors starting, models loading, the first batch).
    """

    shards: list[Path]
    written: list[Path]
    skipped: list[Path]
    rows: int
    audio_seconds: float
    seconds: float
    first_row_s: float = 0.0


def shard_path(output_dir: Path, k: int) -> Path:
    return output_dir / f"shard-{k:05d}.jsonl"


def plan(rows: list[Utterance], shard_size: int) -> list[list[int]]:
    """Input indices per shard, in manifest order."""
    return [list(range(s, min(s + shard_size, len(rows)))) for s in range(0, len(rows), shard_size)]


def job_record(rows: list[Utterance], model: ModelSpec, options: TranscriptionOptions, shard_size: int) -> dict:
    """What the shards depend on; a re-run must match it to reuse them."""
    inputs = hashlib.sha256(json.dumps([str(r.audio) for r in rows]).encode()).hexdigest()[:16]
    return {
        "model": asdict(model),
        "options": json.loads(json.dumps(asdict(options))),
        "shard_size": shard_size,
        "inputs": len(rows),
        "inputs_sha256": inputs,
    }


def prepare_output(output_dir: Path, record: dict, force: bool) -> None:
    """Start or continue the job in ``output_dir``; refuses to mix shards of another job without ``force``."""
    job = output_dir / JOB_FILE
    if job.exists():
        if json.loads(job.read_text()) == record:
            return
        if not force:
            raise OutputExistsError(
                f"{output_dir}: holds shards of another job (model, inputs or options differ); "
                "give another --output-dir or --force to start over"
            )
        shutil.rmtree(output_dir)
    elif output_dir.exists() and any(output_dir.iterdir()) and not force:
        raise OutputExistsError(f"{output_dir}: exists and is not a transcription job's folder; --force to replace")
    elif output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job, json.dumps(record, indent=2) + "\n")


def decode_row(row: dict) -> dict:
    """A Ray task: read and resample one input (an unreadable file becomes an empty clip and its error)."""
    from mkdeploy.audio import load_audio_with_info

    try:
        audio, info = load_audio_with_info(row["path"])
        return {**row, "audio": audio, "duration": info.duration, "silent": info.silent, "error": ""}
    except AudioError as exc:
        return {**row, "audio": np.zeros(0, np.float32), "duration": 0.0, "silent": False, "error": str(exc)}


class TranscribeActor:
    """One model, loaded once per actor; called with a batch of decoded inputs, returns their rows."""

    def __init__(self, model: dict, options: dict, fault: dict | None = None):
        from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber

        spec = ModelSpec(**model)
        kw = {"variant": spec.variant} if spec.variant else {}
        self.transcriber = WhisperTranscriber.from_pretrained(
            spec.path, spec.backend, spec.device, spec.threads, spec.dtype, **kw
        )
        self.options = TranscriptionOptions(**options)
        self.fault = FaultInjection(**fault) if fault else None
        self.model_name = Path(spec.path).name

    def __call__(self, batch: dict) -> dict:
        if self.fault:
            self.fault.maybe_crash(batch["index"])
        n = len(batch["index"])
        results: list[Transcription | None] = [None] * n
        todo = [k for k in range(n) if not batch["error"][k] and not batch["silent"][k]]
        for k in range(n):
            if batch["silent"][k]:
                results[k] = Transcription.of_silence(str(batch["path"][k]), float(batch["duration"][k]))
        if todo:
            audios = [np.asarray(batch["audio"][k], dtype=np.float32) for k in todo]
            for k, t in zip(todo, self.transcriber.transcribe_arrays(audios, self.options)):
                results[k] = t
        rows = [self._row(batch, k, results[k]) for k in range(n)]
        return {"index": np.asarray(batch["index"]), "shard": np.asarray(batch["shard"]), "row": np.asarray(rows)}

    def _row(self, batch: dict, k: int, t: Transcription | None) -> str:
        row = {
            "id": str(batch["id"][k]),
            "audio": str(batch["path"][k]),
            "text": t.text if t else None,
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in t.segments] if t else [],
            "model": self.model_name,
            "duration": round(float(batch["duration"][k]), 3),
        }
        if t and t.gate:
            row["gate"] = t.gate
        if batch["error"][k]:
            row["error"] = str(batch["error"][k])
        return json.dumps(row, ensure_ascii=False)


def transcribe_on_ray(
    rows: list[Utterance],
    model: ModelSpec,
    options: TranscriptionOptions,
    output_dir: str | Path,
    config: RayConfig,
    shard_size: int = 64,
    force: bool = False,
    on_shard: Callable[[Path, int], None] | None = None,
    fault: FaultInjection | None = None,
) -> ShardJob:
    """Transcribe ``rows`` with ``config.actors`` model actors; write the missing shards of ``output_dir``.

    Args:
        rows: the inputs (a manifest's or a folder's; references, if any, are ignored).
        model: what each actor loads.
        options: decoding options (``batch_size`` is also the rows per actor call).
        output_dir: the job's folder (``job.json`` and ``shard-NNNNN.jsonl``).
        config: where and how wide (actors, resources per actor, cluster address).
        shard_size: inputs per shard (the unit a re-run skips).
        force: replace a folder that holds another job's shards.
        on_shard: called with each shard written and its row count.
        fault: crash one actor once (see :class:`FaultInjection`).

    Returns:
        the job's shards and what this call did.
    """
    config.check()
    if shard_size < 1:
        raise MkdError("--shard-size must be at least 1")
    output_dir = Path(output_dir)
    prepare_output(output_dir, job_record(rows, model, options, shard_size), force)
    shards = plan(rows, shard_size)
    paths = [shard_path(output_dir, k) for k in range(len(shards))]
    pending = [k for k, p in enumerate(paths) if not p.exists()]
    done = [paths[k] for k in range(len(shards)) if k not in pending]
    if not pending:
        return ShardJob(paths, [], done, 0, 0.0, 0.0)
    items = [{"index": i, "shard": k, "id": rows[i].id, "path": str(rows[i].audio)} for k in pending for i in shards[k]]
    t0 = time.perf_counter()
    connect(config.ray_address)
    actor_kwargs = {"model": asdict(model), "options": asdict(options), "fault": asdict(fault) if fault else None}
    gpus = actor_gpus(config, model.device)
    buffers: dict[int, dict[int, str]] = {k: {} for k in pending}
    written, audio_s, first = [], 0.0, 0.0
    for result in stream_results(
        items, TranscribeActor, actor_kwargs, config, options.batch_size, gpus, prepare=decode_row
    ):
        first = first or time.perf_counter() - t0
        k, i = int(result["shard"]), int(result["index"])
        buffers[k][i] = str(result["row"])
        audio_s += json.loads(buffers[k][i])["duration"]
        if len(buffers[k]) == len(shards[k]):
            text = "".join(buffers[k][j] + "\n" for j in shards[k])
            atomic_write_text(paths[k], text)
            written.append(paths[k])
            del buffers[k]
            if on_shard:
                on_shard(paths[k], len(shards[k]))
    missing = sorted(buffers)
    if missing:  # Ray returned without every row: never write a partial shard
        raise RuntimeError(f"Ray job ended without all rows of shards {missing}; re-run to finish them")
    return ShardJob(paths, sorted(written), done, len(items), audio_s, time.perf_counter() - t0, first)


def read_shards(output_dir: str | Path) -> list[dict]:
    """Every row of a job's shards, in input order."""
    return [json.loads(line) for p in sorted(Path(output_dir).glob("shard-*.jsonl")) for line in p.open()]
