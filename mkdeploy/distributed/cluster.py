"""Joining or starting Ray, and streaming rows through a pool of model actors with Ray Data.

Ray Data's actor pool (``map_batches`` with a callable class) restarts an actor whose process dies and
retries its unfinished batches on the new one (``max_restarts=-1``, ``max_task_retries=-1``: the defaults
``ActorPoolMapOperator`` sets in Ray 2.x, ray/data/_internal/execution/operators/actor_pool_map_operator.py;
the fault-tolerance tests fail if a Ray release drops them). A retried batch may have been half done
before the crash, but only a finished task's output reaches the driver, and the driver keeps the first
result of every input index (:func:`stream_results`), so every input is answered exactly once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mkdeploy.distributed.config import FORWARDED_ENV, RayConfig
from mkdeploy.errors import MissingExtraError, MkdError

#: called inside an actor with the input indices of each batch before it runs (None: nothing); the tests pass
#: mkdeploy/testing/faults.py's FaultInjection to crash one actor mid-job
BatchHook = Callable[[Iterable[int]], None]


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a local instance (this machine's CPUs unless ``num_cpus``).

    Raises:
        MkdError: the [ray] extra is missing, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError("ray", "Ray jobs", "ray") from None
    if ray.is_initialized():
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    kw: dict[str, Any] = {
        "runtime_env": {"env_vars": env},
        "logging_level": logging.WARNING,
        "log_to_driver": False,  # actors' library chatter; their errors still reach the driver as exceptions
    }
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kw)
    except ConnectionError as exc:
        raise MkdError(f"--ray-address {address}: cannot reach the Ray cluster ({exc})") from None
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI prints its own progress, one line per shard
    ctx.print_on_execution_start = False


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def default_gpus(given: float | None, device: str) -> float:
    """GPUs per actor or replica: as given, else one when the cluster has GPUs and the device is not forced
    to CPU."""
    if given is not None:
        return given
    return 1.0 if device != "cpu" and cluster_gpus() >= 1 else 0.0


def actor_gpus(config: RayConfig, device: str) -> float:
    """GPUs per model actor (:func:`default_gpus` of ``--actor-gpus``)."""
    return default_gpus(config.actor_gpus, device)


def stream_results(
    items: list[dict],
    actor_cls: type,
    actor_kwargs: dict,
    config: RayConfig,
    batch_size: int,
    num_gpus: float,
    prepare=None,
) -> Iterator[dict]:
    """Run ``items`` through ``config.actors`` instances of ``actor_cls`` and yield each input's result once.

    Args:
        items: the dataset's rows (one per input, or one per batch of inputs).
        actor_cls: a callable class taking ``actor_kwargs``; called with a numpy batch (dict of columns), it
            returns a batch with an ``"index"`` column, one unique index per input.
        batch_size: dataset rows per actor call.
        num_gpus: GPUs reserved per actor.
        prepare: a per-row function run in Ray tasks before the actors (audio decoding), or None.

    Yields:
        result rows as dicts, in completion order, each input index once.
    """
    import ray.data

    blocks = max(1, -(-len(items) // batch_size))
    ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=blocks)
    if prepare is not None:
        # Plain tasks, reserving no CPU: the actors may hold every CPU a node has (2 actors on 2 cores), and
        # a task waiting for a free CPU would then wait for ever. Ray Data's backpressure still bounds how
        # many run, and decoding a file is small next to transcribing it.
        ds = ds.map(prepare, num_cpus=0, compute=ray.data.TaskPoolStrategy(size=min(blocks, max(2, config.actors))))
    ds = ds.map_batches(
        actor_cls,
        fn_constructor_kwargs=actor_kwargs,
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=config.actor_cpus,
        num_gpus=num_gpus,
    )
    seen: set[int] = set()
    for row in ds.iter_rows():
        i = int(row["index"])
        if i in seen:
            continue
        seen.add(i)
        yield row
