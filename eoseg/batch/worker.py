"""The Dask task (:func:`run_scene`) and the per-process state of a worker (predictor cache, threads)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from eoseg.batch.claims import CLAIM_POLL_S, Claim, break_if_stale, prepare, try_claim, undo
from eoseg.batch.engine import available_cpus, wants_cuda, worker_host
from eoseg.batch.jobs import SceneJob, TaskSpec, now
from eoseg.batch.records import build_record, input_identity, read_json, record_mismatch
from eoseg.batch.summary import scene_summary
from eoseg.errors import ConfigError, EosegError, OutputError
from eoseg.outputs.atomic import write_journal, write_json_atomic

_PREDICTORS: OrderedDict[tuple, Any] = OrderedDict()
_PREDICTOR_CACHE_SIZE = 2
_LOCK = threading.Lock()
_PROCESS: dict[str, Any] = {}


def _current_worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def torch_threads_for(spec: TaskSpec, worker) -> int | None:
    """Torch intra-op threads for this process: explicit, else this host's CPUs shared among its Dask threads."""
    if spec.torch_threads:
        return spec.torch_threads
    if worker is None:
        return None
    host_threads = spec.host_threads.get(worker_host(worker.address))
    if not host_threads:
        return 1
    return max(1, available_cpus() // host_threads)


def _configure_process(spec: TaskSpec, worker) -> None:
    threads = torch_threads_for(spec, worker)
    with _LOCK:
        if not _PROCESS.get("tuned"):  # once per worker process: GDAL's cache and glibc's malloc (eoseg.process)
            from eoseg.process import tune_process

            _PROCESS["tuned"] = tune_process(cpu=not wants_cuda(spec.settings))
        if threads is None or _PROCESS.get("torch_threads") == threads:
            return
        import torch

        torch.set_num_threads(threads)
        os.environ["GDAL_NUM_THREADS"] = str(threads)  # COG compression threads: the worker's share too
        _PROCESS["torch_threads"] = threads


def worker_predictor(spec: TaskSpec):
    """``(predictor, seconds spent loading)`` from this process's cache (loaded on first use)."""
    from eoseg.predict import Predictor

    settings = replace(spec.settings, overwrite=True)  # the batch layer enforces the overwrite policy itself
    key = (spec.models, json.dumps(settings.to_dict(), sort_keys=True))
    with _LOCK:
        if key in _PREDICTORS:
            _PREDICTORS.move_to_end(key)
            return _PREDICTORS[key], 0.0
        start = time.perf_counter()
        predictor = Predictor(list(spec.models), settings)
        _PREDICTORS[key] = predictor
        while len(_PREDICTORS) > _PREDICTOR_CACHE_SIZE:
            _PREDICTORS.popitem(last=False)
        return predictor, time.perf_counter() - start


def _relative_outputs(record: dict, job: SceneJob, spec: TaskSpec) -> dict[str, str]:
    base = job.out_dir(spec.out_root)
    return {k: os.path.relpath(base / e["path"], spec.out_root) for k, e in (record.get("outputs") or {}).items()}


def new_outcome(job: SceneJob, worker) -> dict:
    return {"scene": str(job.path), "relpath": str(job.relpath), "status": None, "error_type": None,
            "error": None, "worker": getattr(worker, "address", None), "started": now(), "seconds": None,
            "load_seconds": 0.0, "predict_seconds": None, "outputs": {}, "record": None, "recovered_from": None,
            "redo_reason": None}


def _skip_if_done(job: SceneJob, spec: TaskSpec, out: dict, *, own_batch_only: bool = False) -> bool:
    """Use a matching completion record instead of predicting again.

    With ``--resume`` any matching record counts (status ``skipped``). Without it, only a record written by
    this same batch does: the scene finished, but its worker died before Dask collected the result, and the
    retry must not trip over the batch's own outputs (status ``ok``).
    """
    record_path = job.record_path(spec.out_root)
    record = read_json(record_path)
    if own_batch_only and (record is None or record.get("batch") != spec.batch_id):
        return False
    reason = record_mismatch(record, job, spec)
    if reason is not None:
        out["redo_reason"] = reason
        return False
    claim = read_json(job.claim_path(spec.out_root))
    if own_batch_only and claim is not None and claim.get("batch") == spec.batch_id:
        out["recovered_from"] = claim.get("worker")
    break_if_stale(job, spec)  # a claim left by a run killed between record and release
    out.update(status="ok" if own_batch_only else "skipped", outputs=_relative_outputs(record or {}, job, spec),
               record=os.path.relpath(record_path, spec.out_root),
               **{k: (record or {}).get(k) for k in ("quality", "product") if k in (record or {})})
    return True


def _claim_or_skip(job: SceneJob, spec: TaskSpec, worker, out: dict) -> Claim | None:
    """The scene's claim, waiting while another live attempt holds it; None when the scene turns out done."""
    while True:
        if _skip_if_done(job, spec, out, own_batch_only=not spec.resume):
            return None
        claim = try_claim(job, spec, worker)
        if claim is not None:
            return claim
        time.sleep(CLAIM_POLL_S)


def _too_cloudy(predictor, job: SceneJob, spec: TaskSpec, out: dict) -> bool:
    """With ``--max-cloud``: whether the scene's quality layer says more cloud than allowed (then reported
    ``too_cloudy``, nothing written). Scenes without a quality layer are processed."""
    from eoseg.products import mask_fractions, product_info

    if spec.max_cloud is None:
        return False
    scene = predictor.open(job.path)
    fractions = mask_fractions(scene)
    if fractions is None or fractions.cloud <= spec.max_cloud:
        return False
    out.update(status="too_cloudy", error=f"cloud fraction {fractions.cloud:.3f} is above --max-cloud "
                                          f"{spec.max_cloud:g}", quality={"cloud_fraction": round(fractions.cloud, 6),
                                                                         "valid_fraction": round(fractions.valid, 6)},
               product=product_info(scene))
    return True


def _predict_and_record(job: SceneJob, spec: TaskSpec, claim: Claim, out: dict) -> None:
    identity = input_identity(job.path, checksum=spec.checksum_inputs)
    predictor, out["load_seconds"] = worker_predictor(spec)
    if spec.model_hash and predictor.model_hash != spec.model_hash:
        raise ConfigError("the worker's model differs from the client's (bundle sha256)", path=",".join(spec.models),
                          fix="give every worker the same bundle (a shared path) or pass a bundle path")
    if _too_cloudy(predictor, job, spec, out):
        return
    with write_journal() as journal:
        try:
            prepare(job, spec)
            result = predictor.predict(job.path, job.out_dir(spec.out_root), progress=False, stem=job.stem)
            outputs = dict(result.outputs)
            aux = outputs["classes"].with_name(outputs["classes"].name + ".aux.xml")
            if aux.exists():
                outputs["classes_metadata"] = aux
            extra = {"height": result.height, "width": result.width, "tiles": result.tiles,
                     "device": result.device, "precision": result.precision, "seconds": round(result.seconds, 3),
                     "quality": result.quality, "product": result.product}
            record = build_record(job, spec, outputs, identity, extra)
            if not claim.held():
                raise OutputError("another attempt took over this scene while it was processed", path=job.path,
                                  fix="none needed: the other attempt writes the scene's outputs and record")
            write_json_atomic(job.record_path(spec.out_root), record)
        except BaseException:
            undo(claim, journal)
            raise
    out.update(status="ok", predict_seconds=round(result.seconds, 3), height=result.height, width=result.width,
               tiles=result.tiles, device=result.device, precision=result.precision,
               quality=result.quality, product=result.product, outputs=_relative_outputs(record, job, spec),
               record=os.path.relpath(job.record_path(spec.out_root), spec.out_root))


def _add_summary(job: SceneJob, spec: TaskSpec, out: dict) -> None:
    if spec.summary and out["status"] in ("ok", "skipped") and "classes" in out["outputs"]:
        out.update(scene_summary(job, spec.out_root / out["outputs"]["classes"], spec, out))


def run_scene(job: SceneJob, spec: TaskSpec) -> dict:
    """The Dask task: process one scene and return its outcome as plain values.

    Errors of the scene itself (:class:`EosegError`: corrupt, no CRS, too few bands, outputs exist...)
    come back as ``status="failed"``; anything else propagates so Dask can retry the task. Either way the
    attempt removes what it wrote (see :mod:`eoseg.batch.claims`) and releases its claim.
    """
    t0 = time.perf_counter()
    worker = _current_worker()
    out = new_outcome(job, worker)
    _configure_process(spec, worker)
    claim = None
    try:
        claim = _claim_or_skip(job, spec, worker, out)
        if claim is not None:
            out["recovered_from"] = claim.recovered_from
            _predict_and_record(job, spec, claim, out)
        _add_summary(job, spec, out)
    except EosegError as exc:
        out.update(status="failed", error_type=type(exc).__name__, error=str(exc))
    finally:
        if claim is not None:
            claim.release()
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["finished"] = now()
    return out
