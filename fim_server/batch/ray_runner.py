"""`fim-server infill --ray`: the same job with the engine replicated over a Ray cluster.

The driver does everything but decoding: it finds the holes, builds the same length-sorted
batches as a local run, keeps the journal and writes every output. Replicas (Ray actors, one
per GPU; on a CPU-only cluster `replicas` of them with `cpus_per_replica` CPUs each) load the
model once and answer batches. Each idle replica gets the next batch; results come back as
they finish and are journaled at once, so resume works exactly as it does locally. Identical
batches on the same kind of device give identical fills, whichever replica ran them.

Ray is imported only here, and only when --ray is asked for.
"""

from __future__ import annotations

from typing import Iterator, Optional

from fim_server.wire.options import DecodeConfig
from fim_server.engine.types import InfillRequest
from .run import run_batch


def connect(address: str) -> None:
    """'local' starts a Ray instance here; 'auto' joins the running cluster; else ADDRESS."""
    import ray

    if ray.is_initialized():       # the caller (a test, a notebook) already connected
        return
    if address == "local":
        ray.init(include_dashboard=False)
        return
    check_reachable(address)
    ray.init(address=address)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would retry for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return                      # 'auto' and other forms: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port} ({exc.strerror or exc})") from None


class Replica:
    """One model replica: loads the engine once, answers batches (runs inside a Ray actor).
    `spec` holds load_engine's keyword arguments (kind, model, family, dtype, device, ...)."""

    def __init__(self, spec: dict, gpu: bool, threads: int):
        import torch

        from fim_server.engine import load_engine

        if not gpu:
            torch.set_num_threads(max(1, threads))
        self.engine = load_engine(**{**spec, "device": spec.get("device") or ("cuda" if gpu else "cpu")})

    def infill(self, index: int, requests: list[InfillRequest], config: DecodeConfig) -> tuple[int, list[dict]]:
        return index, run_batch(self.engine, requests, config)


class RayRunner:
    """Runner over Ray actors: batches go to whichever replica is idle."""

    def __init__(self, spec: dict, config: DecodeConfig, replicas: Optional[int] = None,
                 cpus_per_replica: int = 1):
        """spec: load_engine's keyword arguments; the model paths must exist on every node."""
        import ray

        self.ray, self.config = ray, config
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n = replicas or gpus or 1
        if n < 1 or cpus_per_replica < 1:
            raise ValueError("--ray-replicas and --ray-cpus must be at least 1")
        resources = {"num_gpus": 1} if gpus else {"num_cpus": cpus_per_replica}
        actor = ray.remote(Replica).options(**resources)
        self.actors = [actor.remote(spec, bool(gpus), cpus_per_replica) for _ in range(n)]
        self.replicas, self.gpus = n, gpus

    def run(self, batches: list[list[InfillRequest]]) -> Iterator[tuple[int, list[dict]]]:
        todo = list(range(len(batches)))[::-1]            # pop() hands them out in order
        idle, busy = list(self.actors), {}                # busy: future -> (batch index, actor)
        while todo or busy:
            while todo and idle:
                i, a = todo.pop(), idle.pop(0)
                busy[a.infill.remote(i, batches[i], self.config)] = (i, a)
            if not busy:                                  # every replica is gone
                for i in reversed(todo):
                    yield i, self._failed(batches[i], "no Ray replica is left")
                return
            [ready], _ = self.ray.wait(list(busy), num_returns=1)
            i, a = busy.pop(ready)
            try:
                _, outcomes = self.ray.get(ready)
                idle.append(a)
            except self.ray.exceptions.RayError as exc:
                if isinstance(exc, self.ray.exceptions.RayActorError):
                    self.actors.remove(a)                 # gone for the rest of the job
                else:
                    idle.append(a)                        # the task failed; the replica lives on
                outcomes = self._failed(batches[i], f"Ray replica failed: {type(exc).__name__}: {exc}")
            yield i, outcomes

    @staticmethod
    def _failed(batch: list[InfillRequest], message: str) -> list[dict]:
        return [{"error": message.splitlines()[0]}] * len(batch)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
