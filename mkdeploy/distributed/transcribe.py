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
from mkdeploy.distributed.cluster import BatchHook, actor_gpus, connect, stream_results
from mkdeploy.distributed.config import RayConfig
from mkdeploy.errors import AudioError, MkdError, OutputExistsError
from mkdeploy.fsutil import atomic_write_text
from mkdeploy.options import TranscriptionOptions
from mkdeploy.results import Transcription
from mkdeploy.transcription.loading import load_transcriber

JOB_FILE = "job.json"


@dataclass
class ModelSpec:
    """The model each actor loads (the arguments of :func:`mkdeploy.transcription.loading.load_transcriber`)."""

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


def decode_batch(item: dict) -> dict:
    """A Ray task: read and resample one batch's inputs (an unreadable file becomes an empty clip and its
    error). The clips travel concatenated, with their lengths: one array per batch."""
    from mkdeploy.audio import load_audio_with_info

    audios, durations, silent, errors = [], [], [], []
    for path in item["paths"]:
        try:
            audio, info = load_audio_with_info(path)
            audios.append(audio)
            durations.append(info.duration)
            silent.append(info.silent)
            errors.append("")
        except AudioError as exc:
            audios.append(np.zeros(0, np.float32))
            durations.append(0.0)
            silent.append(False)
            errors.append(str(exc))
    return {
        **item,
        "audio": np.concatenate(audios).astype(np.float32),
        "lengths": [len(a) for a in audios],
        "durations": durations,
        "silent": silent,
        "errors": errors,
    }


class TranscribeActor:
    """One model, loaded once per actor; called with decoded batches (one row each), returns one row per input.

    A row of the dataset is one transcription batch, as the single-process ``transcribe_files`` forms it
    (inputs ``[k * batch_size, (k + 1) * batch_size)`` less the silent and unreadable ones): with int8
    models the batch changes the result (dynamic quantisation scales each activation by its batch's
    range), so the same batches are what makes the transcripts identical, whatever blocks Ray Data forms.
    """

    def __init__(self, model: dict, options: dict, before_batch: BatchHook | None = None):
        spec = ModelSpec(**model)
        self.transcriber = load_transcriber(
            spec.path, spec.backend, spec.device, spec.threads, spec.dtype, spec.variant
        )
        self.options = TranscriptionOptions(**options)
        self.before_batch = before_batch
        self.model_name = Path(spec.path).name

    def __call__(self, batch: dict) -> dict:
        index, shard, rows = [], [], []
        for j in range(len(batch["indices"])):
            item = {k: batch[k][j] for k in batch}
            if self.before_batch:
                self.before_batch(item["indices"])
            for i, row in zip(item["indices"], self._transcribe(item)):
                index.append(int(i))
                shard.append(int(item["shard"]))
                rows.append(row)
        return {"index": np.asarray(index), "shard": np.asarray(shard), "row": np.asarray(rows)}

    def _transcribe(self, item: dict) -> list[str]:
        ends = np.cumsum(item["lengths"])
        clips = np.split(np.asarray(item["audio"], dtype=np.float32), ends[:-1])
        n = len(clips)
        results: list[Transcription | None] = [None] * n
        for k in range(n):
            if item["silent"][k]:
                results[k] = Transcription.of_silence(str(item["paths"][k]), float(item["durations"][k]))
        todo = [k for k in range(n) if not item["errors"][k] and not item["silent"][k]]
        if todo:
            for k, t in zip(todo, self.transcriber.transcribe_arrays([clips[k] for k in todo], self.options)):
                results[k] = t
        return [self._row(item, k, results[k]) for k in range(n)]

    def _row(self, item: dict, k: int, t: Transcription | None) -> str:
        row = {
            "id": str(item["ids"][k]),
            "audio": str(item["paths"][k]),
            "text": t.text if t else None,
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in t.segments] if t else [],
            "model": self.model_name,
            "duration": round(float(item["durations"][k]), 3),
        }
        if t and t.gate:
            row["gate"] = t.gate
        if item["errors"][k]:
            row["error"] = str(item["errors"][k])
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
    before_batch: BatchHook | None = None,
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
        before_batch: called in the actor with each batch's input indices (see
            :data:`~mkdeploy.distributed.cluster.BatchHook`).

    Returns:
        the job's shards and what this call did.
    """
    config.check()
    if shard_size < 1 or shard_size % options.batch_size:
        # a batch must not straddle two shards: a re-run of one shard would batch its inputs differently
        raise MkdError(f"--shard-size {shard_size} must be a multiple of --batch-size {options.batch_size}")
    output_dir = Path(output_dir)
    prepare_output(output_dir, job_record(rows, model, options, shard_size), force)
    shards = plan(rows, shard_size)
    paths = [shard_path(output_dir, k) for k in range(len(shards))]
    pending = [k for k, p in enumerate(paths) if not p.exists()]
    done = [paths[k] for k in range(len(shards)) if k not in pending]
    if not pending:
        return ShardJob(paths, [], done, 0, 0.0, 0.0)
    b = options.batch_size
    batches = [(k, shards[k][s : s + b]) for k in pending for s in range(0, len(shards[k]), b)]
    items = [
        {
            "index": n,
            "shard": k,
            "indices": idx,
            "ids": [rows[i].id for i in idx],
            "paths": [str(rows[i].audio) for i in idx],
        }
        for n, (k, idx) in enumerate(batches)
    ]
    t0 = time.perf_counter()
    connect(config.ray_address)
    actor_kwargs = {"model": asdict(model), "options": asdict(options), "before_batch": before_batch}
    gpus = actor_gpus(config, model.device)
    buffers: dict[int, dict[int, str]] = {k: {} for k in pending}
    written, audio_s, first = [], 0.0, 0.0
    for result in stream_results(items, TranscribeActor, actor_kwargs, config, 1, gpus, prepare=decode_batch):
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
    n_rows = sum(len(shards[k]) for k in pending)
    return ShardJob(paths, sorted(written), done, n_rows, audio_s, time.perf_counter() - t0, first)


def read_shards(output_dir: str | Path) -> list[dict]:
    """Every row of a job's shards, in input order."""
    return [json.loads(line) for p in sorted(Path(output_dir).glob("shard-*.jsonl")) for line in p.open()]
