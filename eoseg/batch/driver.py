"""The client side of a batch: :func:`run_batch` finds the scenes, starts the engine and collects outcomes."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from eoseg.batch.discovery import discover_scenes
from eoseg.batch.engine import Engine, open_engine
from eoseg.batch.jobs import SceneJob, TaskSpec, make_out_root, now
from eoseg.batch.report import REPORT_NAME, BatchReport, ReportWriter, count_statuses
from eoseg.batch.summary import SUMMARY_SUFFIXES, write_summary
from eoseg.batch.worker import new_outcome, run_scene
from eoseg.errors import ConfigError
from eoseg.outputs.stac import scene_datetime
from eoseg.predict import PredictSettings

log = logging.getLogger(__name__)

def as_settings(settings: PredictSettings | dict | None) -> PredictSettings:
    if settings is None:
        return PredictSettings()
    if isinstance(settings, PredictSettings):
        return settings
    try:
        return PredictSettings(**settings)
    except TypeError as exc:
        raise ConfigError(f"unknown prediction setting ({exc})", path="settings",
                          fix=f"use the fields of PredictSettings: {', '.join(PredictSettings().to_dict())}") from None


def _model_refs(model: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[str, ...]:
    """Model references for workers: a bundle path made absolute, a packaged name kept as is."""
    items = [model] if isinstance(model, str | os.PathLike) else list(model)
    if not items:
        raise ConfigError("no model given", path="--model", fix="pass --model resunet (or a bundle path)")
    return tuple(str(Path(m).expanduser().resolve()) if Path(m).expanduser().exists() else str(m) for m in items)


def _model_identity(models: tuple[str, ...]) -> tuple[str, dict[str, int], int]:
    """(bundle hash as Predictor.model_hash, class name → id, nodata id) read on the client, no model built."""
    from eoseg.bundle import CARD_FILE, bundle_sha256, read_card, resolve_bundle

    directories = [resolve_bundle(m) for m in models]
    scheme = read_card(directories[0] / CARD_FILE).scheme
    return "+".join(bundle_sha256(d) for d in directories), {c.name: c.id for c in scheme.classes}, scheme.nodata


def _check_arguments(workers, threads_per_worker, retries, torch_threads, summary, scheduler) -> None:
    if scheduler and workers is not None:
        raise ConfigError("--workers sizes a local cluster and cannot be used with --scheduler", path="--workers",
                          fix="leave out --workers (the cluster behind --scheduler has its own workers)")
    for name, value, low in (("--workers", workers, 1), ("--threads-per-worker", threads_per_worker, 1),
                             ("--retries", retries, 0), ("--torch-threads", torch_threads, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be at least {low}", path=name, fix=f"use {name} {max(low, 1)} or more")
    if summary is not None and Path(summary).suffix.lower() not in SUMMARY_SUFFIXES:
        raise ConfigError("the summary must be a .csv or .gpkg file", path=summary,
                          fix="use e.g. --summary OUT/summary.csv (or .gpkg for scene footprints)")


def _failed_outcome(job: SceneJob, exc: BaseException) -> dict:
    """The outcome of a task that Dask gave up on (unexpected errors after retries, workers that kept dying)."""
    out = new_outcome(job, None)
    out.update(status="failed", error_type=type(exc).__name__, error=str(exc) or repr(exc), started=None,
               finished=now())
    return out


def _collect(future, job: SceneJob) -> dict:
    if future.status == "finished":
        return future.result()
    try:
        exc = future.exception()
    except Exception as cancelled:  # noqa: BLE001 - a cancelled future raises instead of returning
        exc = cancelled
    return _failed_outcome(job, exc)


def _progress_bar(total: int, progress: bool | None):
    import sys

    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, unit="scene", desc="eoseg batch", disable=not show)


def _submit_all(engine: Engine, jobs: list[SceneJob], spec: TaskSpec, retries: int) -> dict:
    resources = {"GPU": 1} if engine.gpu else None
    futures = {}
    for i, job in enumerate(jobs):
        future = engine.client.submit(run_scene, job, spec, key=f"eoseg-scene-{spec.batch_id[:8]}-{i}",
                                      retries=retries, resources=resources, pure=False)
        futures[future] = job
    return futures


def _run_tasks(engine: Engine, jobs: list[SceneJob], spec: TaskSpec, retries: int, writer: ReportWriter,
               progress: bool | None) -> dict[Path, dict]:
    from distributed import as_completed

    futures = _submit_all(engine, jobs, spec, retries)
    outcomes: dict[Path, dict] = {}
    try:
        with _progress_bar(len(jobs), progress) as bar:
            for future in as_completed(list(futures)):
                job = futures.pop(future)
                outcome = _collect(future, job)
                outcomes[job.path] = outcome
                writer.add(outcome)
                bar.update(1)
                bar.set_postfix(failed=sum(o["status"] == "failed" for o in outcomes.values()), refresh=False)
    except BaseException:
        engine.client.cancel(list(futures))
        raise
    return outcomes


def run_batch(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    model: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    settings: PredictSettings | dict | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    retries: int = 1,
    summary: str | os.PathLike | None = None,
    progress: bool | None = None,
    torch_threads: int | None = None,
    checksum_inputs: bool = False,
    dashboard_address: str = "127.0.0.1:8787",
    echo: Callable[[str], None] | None = None,
    max_cloud: float | None = None,
    transects: str | os.PathLike | None = None,
    tides: str | os.PathLike | None = None,
    beach_slope: float | None = None,
    reference_level: float = 0.0,
) -> BatchReport:
    """Segment every scene named by ``inputs`` into ``out_dir`` on Dask; see the module docstring.

    ``workers`` / ``threads_per_worker`` size a local cluster (default: one single-threaded worker per CPU,
    or one worker per GPU with CUDA); ``scheduler`` (``tcp://HOST:PORT``) uses an existing cluster instead.
    ``torch_threads`` (default: the host's CPUs divided by its Dask threads) bounds PyTorch in each worker.
    ``retries`` applies to unexpected task errors; scene errors are results. ``summary`` (.csv or .gpkg)
    gets per-scene class areas in km². ``echo`` receives progress lines (dashboard address); the per-scene
    outcomes are in the returned :class:`BatchReport` and in ``out_dir/report.jsonl``. ``max_cloud`` (0–1)
    skips product scenes whose quality layer flags a larger cloud fraction (status ``too_cloudy``).
    ``transects`` (with optional ``tides`` / ``beach_slope`` / ``reference_level``) turns on the shoreline of
    every scene and writes the shoreline time series into ``out_dir`` (see :mod:`eoseg.timeseries`).
    """
    start = time.perf_counter()
    say = echo or log.info
    settings = as_settings(settings)
    if transects is not None:
        settings = _with_shoreline(settings, transects, tides, beach_slope)
    _check_arguments(workers, threads_per_worker, retries, torch_threads, summary, scheduler)
    if max_cloud is not None and not 0 <= max_cloud <= 1:
        raise ConfigError("--max-cloud is a fraction between 0 and 1", path="--max-cloud",
                          fix="use e.g. --max-cloud 0.5")
    out_root = Path(out_dir).expanduser().resolve()
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    jobs = discover_scenes(items, exclude=out_root)
    models = _model_refs(model)
    model_hash, class_ids, nodata = _model_identity(models)
    make_out_root(out_root)
    writer = ReportWriter(out_root / REPORT_NAME)
    try:
        with open_engine(scheduler, workers, threads_per_worker, settings, dashboard_address) as engine:
            say(f"eoseg batch: {len(jobs)} scene(s) on {engine.workers} worker(s); Dask dashboard: "
                f"{engine.dashboard or 'not available'}")
            spec = TaskSpec(models=models, settings=settings, out_root=out_root, model_hash=model_hash,
                            batch_id=uuid.uuid4().hex, class_ids=class_ids, nodata=nodata, resume=resume,
                            checksum_inputs=checksum_inputs, summary=summary is not None,
                            torch_threads=torch_threads, host_threads=engine.host_threads, max_cloud=max_cloud)
            outcomes = _run_tasks(engine, jobs, spec, retries, writer, progress)
    except BaseException:
        writer.abandon()
        raise
    results = [outcomes[job.path] for job in jobs]
    writer.finish(results)
    summary_path = write_summary(Path(summary), results, list(class_ids)) if summary is not None else None
    timeseries_path = None
    if transects is not None:
        timeseries_path = _write_timeseries(results, out_root, Path(transects), tides, beach_slope, reference_level)
    return BatchReport(results=results, counts=count_statuses(results), report_path=writer.path,
                       summary_path=summary_path, seconds=time.perf_counter() - start, workers=engine.workers,
                       dashboard=engine.dashboard, timeseries_path=timeseries_path)


def _with_shoreline(settings: PredictSettings, transects, tides, beach_slope) -> PredictSettings:
    """The settings with the shoreline on; the transects and tide table are read here, before any scene."""
    from dataclasses import replace

    from eoseg.timeseries import read_tides
    from eoseg.transects import read_transects

    read_transects(Path(transects))
    if tides is not None:
        if beach_slope is None or beach_slope <= 0:
            raise ConfigError("a tide correction needs the beach slope", path="--beach-slope",
                              fix="pass --beach-slope (e.g. 0.1 for a 1:10 beach face)")
        read_tides(Path(tides))
    return replace(settings, shoreline=True)


def _write_timeseries(results: list[dict], out_root: Path, transects: Path, tides, beach_slope,
                      reference_level: float) -> Path:
    """The shoreline time series of the scenes that finished (see :mod:`eoseg.timeseries`)."""
    from eoseg.timeseries import SceneShoreline, run_timeseries

    scenes = []
    for r in results:
        outputs = r.get("outputs") or {}
        if r["status"] not in ("ok", "skipped") or "shoreline" not in outputs:
            continue
        when, source = scene_datetime(Path(r["scene"]))
        if source == "file_mtime":
            log.warning("%s: no acquisition date in its tags or name; left out of the shoreline time series",
                        r["relpath"])
            continue
        classes = out_root / outputs["classes"] if "classes" in outputs else None
        scenes.append(SceneShoreline(scene=r["relpath"], date=when, shoreline=out_root / outputs["shoreline"],
                                     classes=classes))
    paths, _ = run_timeseries(scenes, transects, out_root, tides=Path(tides) if tides else None,
                              beach_slope=beach_slope, reference_level=reference_level)
    return paths["timeseries"]
