"""What a Ray job runs with: one dataclass whose field metadata carries the CLI help (as the recipe's and
the server's do). Importing it does not import Ray."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Environment variables handed to every Ray worker: the offline switches the driver runs with, so an actor
#: never tries to reach a model hub the driver was told not to.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME")


@dataclass
class RayConfig:
    """Where a Ray job runs and how wide.

    On a laptop or CI box nothing needs setting: a local Ray instance starts with this machine's CPUs. On a
    cluster (KubeRay, ``ray start --head``), ``ray_address`` joins it; model directories, manifests and the
    output directory must then be paths every node can read (a shared filesystem), as Ray ships code, not data.
    """

    ray_address: str | None = field(
        default=None,
        metadata={"help": "Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local instance."},
    )
    actors: int = field(default=2, metadata={"help": "Model actors (each holds one model)."})
    actor_cpus: float = field(default=1.0, metadata={"help": "CPUs reserved per actor (fractions share cores)."})
    actor_gpus: float | None = field(
        default=None,
        metadata={"help": "GPUs per actor, e.g. 1 or 0.5 (default: 1 when the cluster has GPUs and --device allows)."},
    )

    def check(self) -> RayConfig:
        from mkdeploy.errors import MkdError

        if self.actors < 1 or self.actor_cpus < 0 or (self.actor_gpus or 0) < 0:
            raise MkdError("--actors must be at least 1, --actor-cpus and --actor-gpus at least 0")
        return self


@dataclass
class RayServeConfig:
    """How `mkd serve --ray` deploys the server (field metadata: the CLI help)."""

    replicas: int = field(default=1, metadata={"help": "With --ray: replicas, each holding one model."})
    autoscale: str | None = field(
        default=None, metadata={"help": "With --ray: MIN:MAX replicas, scaled on ongoing requests (e.g. 1:4)."}
    )
    ray_address: str | None = field(
        default=None, metadata={"help": "With --ray: cluster to join (default: start a local Ray instance)."}
    )
    replica_cpus: float = field(default=1.0, metadata={"help": "With --ray: CPUs reserved per replica."})
    replica_gpus: float | None = field(
        default=None, metadata={"help": "With --ray: GPUs per replica (default: 1 when the cluster has GPUs)."}
    )

    def bounds(self) -> tuple[int, int] | None:
        """The autoscaling range, or None for a fixed replica count."""
        if not self.autoscale:
            return None
        from mkdeploy.errors import MkdError

        try:
            lo, hi = (int(x) for x in self.autoscale.split(":"))
        except ValueError:
            raise MkdError(f"--autoscale {self.autoscale}: give MIN:MAX, e.g. 1:4") from None
        if not 0 <= lo <= hi or hi < 1:
            raise MkdError(f"--autoscale {self.autoscale}: need 0 <= MIN <= MAX and MAX >= 1")
        return lo, hi
