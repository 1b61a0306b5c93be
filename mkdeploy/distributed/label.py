"""The teacher's pass on Ray Data: pseudo-labels and cached teacher outputs for `mkd train`.

Teacher actors (each holds the teacher, on a GPU where the cluster has one) compute what
:meth:`~mkdeploy.distill.teacher_pass.TeacherPass.compute` computes and send it back; the driver, which owns the
run directory, stores each row with :meth:`~mkdeploy.distill.teacher_pass.TeacherPass.store`. So the run directory
needs no shared filesystem, and what lands there is byte for byte the format of a local pass
(``data/labels.jsonl`` and ``data/teacher/*.pt``, under the run's fingerprint): training, ``--resume`` and
``--cache-dir`` read it unchanged, and a killed pass resumes from the rows already logged.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mkdeploy.data import Utterance
from mkdeploy.distill.labelling import TeacherPassSpec
from mkdeploy.distill.records import LabelRecord
from mkdeploy.distributed.cluster import BatchHook, actor_gpus, connect, stream_results
from mkdeploy.distributed.config import RayConfig


class LabelActor:
    """One teacher per actor; called with a batch of manifest rows, returns their records and outputs."""

    def __init__(self, spec: TeacherPassSpec, before_batch: BatchHook | None = None):
        self.spec, self.before_batch = spec, before_batch
        self.tp = spec.open()

    def __call__(self, batch: dict) -> dict:
        if self.before_batch:
            self.before_batch(batch["index"])
        rows = [
            Utterance(str(i), Path(str(a)), str(t) if has else None)
            for i, a, t, has in zip(batch["id"], batch["audio"], batch["text"], batch["has_text"])
        ]
        records, payloads = [], []
        for rec, payload in self.spec.compute(self.tp, rows):
            records.append(json.dumps(rec.to_json()))
            buf = io.BytesIO()
            if payload is not None:
                torch.save(payload, buf)
            payloads.append(buf.getvalue())
        # an object array: numpy's fixed-width bytes type would drop the payload's trailing zero bytes
        payload_column = np.empty(len(payloads), dtype=object)
        payload_column[:] = payloads
        return {"index": np.asarray(batch["index"]), "record": np.asarray(records), "payload": payload_column}


@dataclass
class RayLabeller:
    """A :class:`~mkdeploy.distill.labelling.Labeller` that runs the teacher's pass on ``config.actors`` actors.

    Args:
        config: the cluster and the actors' resources.
        before_batch: called in the actor with each batch's input indices (see
            :data:`~mkdeploy.distributed.cluster.BatchHook`).
    """

    config: RayConfig
    before_batch: BatchHook | None = None

    def __call__(self, rows: list[Utterance], spec: TeacherPassSpec) -> Iterator[tuple[LabelRecord, dict | None]]:
        self.config.check()
        connect(self.config.ray_address)
        items = [
            {
                "index": i,
                "id": r.id,
                "audio": str(Path(r.audio).resolve()),
                "text": r.text or "",
                "has_text": r.text is not None,
            }
            for i, r in enumerate(rows)
        ]
        kwargs = {"spec": spec, "before_batch": self.before_batch}
        gpus = actor_gpus(self.config, "auto")
        for result in stream_results(items, LabelActor, kwargs, self.config, spec.batch_size, gpus):
            data = bytes(result["payload"])
            payload = torch.load(io.BytesIO(data), weights_only=True) if data else None
            yield LabelRecord.from_json(json.loads(str(result["record"]))), payload
