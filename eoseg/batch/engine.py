"""The Dask cluster a batch runs on: a local one sized to the machine, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eoseg.errors import ConfigError
from eoseg.predict import PredictSettings

WORKER_WAIT_S = 60.0


@dataclass
class Engine:
    """A connected Dask client and what the batch needs to know about its cluster."""

    client: Any
    workers: int
    host_threads: dict[str, int]
    gpu: bool
    dashboard: str | None


def wants_cuda(settings: PredictSettings) -> bool:
    """Whether the workers will run on CUDA (eoseg.device's policy; asking for CUDA without one fails here)."""
    from eoseg.device import resolve_device

    return resolve_device(settings.device).type == "cuda"


def local_worker_count(workers: int | None, threads_per_worker: int, gpus: int = 0) -> int:
    """Workers of a local cluster: as asked, else one per GPU, else the CPUs divided by threads per worker."""
    if workers is not None:
        return workers
    if gpus:
        return gpus
    return max(1, available_cpus() // threads_per_worker)


def gpu_worker_specs(n: int, threads_per_worker: int) -> dict[str, dict]:
    """SpecCluster worker specs: one nanny per GPU, each seeing only its device and declaring ``GPU=1``."""
    from distributed import Nanny

    return {f"gpu-{i}": {"cls": Nanny, "options": {"nthreads": threads_per_worker, "resources": {"GPU": 1},
                                                   "env": {"CUDA_VISIBLE_DEVICES": str(i)}, "host": "127.0.0.1"}}
            for i in range(n)}


def _local_cluster(workers: int | None, threads_per_worker: int, cuda: bool, dashboard_address: str):
    from distributed import LocalCluster, Scheduler, SpecCluster

    if cuda:
        import torch

        gpus = torch.cuda.device_count()
        n = local_worker_count(workers, threads_per_worker, gpus)
        if n > gpus:
            raise ConfigError(f"{n} workers asked for but only {gpus} GPU(s) are visible", path="--workers",
                              fix=f"use --workers {gpus} or fewer (one worker per GPU), or --device cpu")
        scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": dashboard_address}}
        return SpecCluster(workers=gpu_worker_specs(n, threads_per_worker), scheduler=scheduler,
                           silence_logs=logging.ERROR), n
    n = local_worker_count(workers, threads_per_worker)
    cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True, host="127.0.0.1",
                           dashboard_address=dashboard_address, silence_logs=logging.ERROR)
    return cluster, n


def _dashboard(client) -> str | None:
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):
        return None
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return f"{link} (install bokeh to view it)"
    return link


def _host_threads(info: dict) -> dict[str, int]:
    totals: dict[str, int] = {}
    for address, worker in info.get("workers", {}).items():
        host = worker_host(address)
        totals[host] = totals.get(host, 0) + int(worker.get("nthreads", 1))
    return totals


def _connect(scheduler: str):
    from distributed import Client

    try:
        client = Client(scheduler)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Dask scheduler ({exc})", path=scheduler,
                          fix="start one with `dask scheduler` (and `dask worker ADDRESS`), or leave out "
                              "--scheduler to run on a local cluster") from None
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        client.close()
        raise ConfigError(f"the scheduler has no workers after {WORKER_WAIT_S:.0f} s", path=scheduler,
                          fix=f"start workers with `dask worker {scheduler}`") from None
    return client


@contextlib.contextmanager
def quiet_distributed(level: int) -> Iterator[None]:
    """Raise the ``distributed`` loggers to ``level`` for a while (cluster start/stop chatter), unless the root
    logger is at DEBUG (``eoseg -v``). ``LocalCluster(silence_logs=...)`` only quiets distributed's own handlers,
    not the CLI's root handler."""
    logger = logging.getLogger("distributed")
    old = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(old)


@contextlib.contextmanager
def open_engine(scheduler: str | None, workers: int | None, threads_per_worker: int, settings: PredictSettings,
                dashboard_address: str = "127.0.0.1:8787") -> Iterator[Engine]:
    """A client on ``scheduler``, or on a local cluster sized to this machine (stopped on exit)."""
    from distributed import Client

    if scheduler:
        with quiet_distributed(logging.WARNING):
            client = _connect(scheduler)
        try:
            info = client.scheduler_info(n_workers=-1)
            gpu = any("GPU" in (w.get("resources") or {}) for w in info.get("workers", {}).values())
            yield Engine(client, len(info.get("workers", {})), _host_threads(info), gpu, _dashboard(client))
        finally:
            client.close()
        return
    cuda = wants_cuda(settings)
    with quiet_distributed(logging.ERROR):
        cluster, n = _local_cluster(workers, threads_per_worker, cuda, dashboard_address)
        try:
            with Client(cluster) as client:
                yield Engine(client, n, {"127.0.0.1": n * threads_per_worker}, cuda, _dashboard(client))
        finally:
            cluster.close()


def worker_host(address: str) -> str:
    from distributed.comm import get_address_host

    return get_address_host(address)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
