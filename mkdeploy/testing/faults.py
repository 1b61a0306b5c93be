"""A real crash inside a Ray actor, for the fault-tolerance tests (tests/test_ray_transcribe.py,
tests/test_ray_label.py) and for trying a cluster's recovery by hand: pass one as ``before_batch``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FaultInjection:
    """Makes an actor's process exit the first time it reaches input ``index`` (a ``marker`` file records
    that it happened, so the restarted actor goes on). A :data:`~mkdeploy.distributed.cluster.BatchHook`."""

    index: int
    marker: str

    def __call__(self, indices: Iterable) -> None:
        if self.index in {int(i) for i in indices} and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # a crash, not an exception: no cleanup, the process is gone mid-batch
