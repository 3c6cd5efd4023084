"""Batch prediction over archives of scenes on Dask (``dask.distributed``), resumable, failures kept local.

:func:`run_batch` finds the scenes (directories searched recursively for GeoTIFFs, glob patterns, text / CSV
manifests), starts a local cluster sized to the machine or connects to an existing scheduler, runs one task
per scene, and writes ``report.jsonl`` (one line per scene) and optionally a per-scene class-area summary.

Where outputs go: each input has a root (a directory input: itself; a glob: the directory before its first
wildcard; a manifest: the common parent of its entries; a plain file: its directory). A scene's outputs go to
``OUT/<its path relative to that root, without suffix>_classes.tif`` and so on, as ``eoseg predict`` writes
them, so the output tree mirrors the archive.

Worker side: :func:`run_scene` is the task. Each worker process keeps its :class:`~eoseg.predict.Predictor`
in a module-level cache keyed by model references and settings, so a model is loaded once per process. The
task catches :class:`~eoseg.errors.EosegError` itself (a corrupt scene is a result, not a task failure);
unexpected exceptions and worker deaths go to Dask, which retries (``retries``) or reschedules elsewhere.

Completion records: after all outputs of a scene are in place, ``<stem>.done.json`` is written atomically next
to them (input size + mtime_ns [+ sha256], model bundle hash, prediction settings, eoseg version, outputs
with sha256). ``resume=True`` skips scenes whose record still matches and redoes the others. While a scene
is processed a hidden claim ``.<stem>.claim.json`` names the batch and worker; a retry of the same batch
(after a worker died mid-scene) recognises its own claim and may replace that scene's partial outputs.
A scene that fails leaves neither outputs nor a record, so after a batch every scene is either complete
(outputs + matching record) or absent.

Summary (``summary=``, .csv or .gpkg): one row per finished scene, sorted by date: ``scene, date,
date_source, <class>_km2..., nodata_km2``. Areas are pixel counts of the class raster × pixel area: in a
projected CRS |det(transform)| in CRS units² converted to m² with the CRS's linear unit; in a geographic CRS
the geodesic area (pyproj.Geod on the CRS's ellipsoid) of one pixel of each row, so latitude is accounted for
row by row. Scenes without a CRS get empty areas. The date is the acquisition date found by
:func:`eoseg.outputs.stac.scene_datetime` (tags, then the file name), left empty when only the file's mtime
is known. The .gpkg variant adds each scene's footprint (EPSG:4326) as the geometry.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import glob
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from eoseg import __version__
from eoseg.errors import ConfigError, EosegError, OutputError, OutputExistsError, SceneReadError
from eoseg.outputs.atomic import atomic_write, cleanup_temporaries, output_files, temporary_path
from eoseg.predict import PredictSettings

log = logging.getLogger(__name__)

GEOTIFF_SUFFIXES = (".tif", ".tiff")
MANIFEST_SUFFIXES = (".txt", ".csv", ".lst", ".list")
MANIFEST_COLUMNS = ("path", "scene", "file", "filename", "image")
SUMMARY_SUFFIXES = (".csv", ".gpkg")
RECORD_SUFFIX = ".done.json"
CLAIM_SUFFIX = ".claim.json"
REPORT_NAME = "report.jsonl"
WORKER_WAIT_S = 60.0
STRIP_ROWS = 512
STATUSES = ("ok", "failed", "skipped")


# ---------------------------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneJob:
    """One scene of the archive: its absolute path and where its outputs go, relative to the output root."""

    path: Path
    relpath: PurePosixPath

    @property
    def stem(self) -> str:
        name = self.relpath.name
        return name.rsplit(".", 1)[0] if "." in name else name

    def out_dir(self, root: Path) -> Path:
        return Path(root) / self.relpath.parent

    def record_path(self, root: Path) -> Path:
        return self.out_dir(root) / f"{self.stem}{RECORD_SUFFIX}"

    def claim_path(self, root: Path) -> Path:
        return self.out_dir(root) / f".{self.stem}{CLAIM_SUFFIX}"

    @property
    def output_key(self) -> str:
        return str(self.relpath.parent / self.stem)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_inside(path: Path, directory: Path | None) -> bool:
    return directory is not None and (path == directory or directory in path.parents)


def _absolute(path: str | os.PathLike) -> Path:
    """Absolute and normalised, symlinks kept (so paths stay under the input root they were found in)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _scan_directory(root: Path, exclude: Path | None) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if (path.suffix.lower() in GEOTIFF_SUFFIXES and path.is_file() and not _is_hidden(path, root)
                and not _is_inside(path, exclude)):
            found.append(path)
    return sorted(found)


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return _absolute(Path(*parts)) if parts else _absolute(".")


def _expand_glob(pattern: str, exclude: Path | None) -> tuple[Path, list[Path]]:
    pattern = os.path.expanduser(pattern)
    matches = sorted({_absolute(p) for p in glob.glob(pattern, recursive=True)})
    return _glob_root(pattern), [p for p in matches if p.is_file() and not _is_inside(p, exclude)]


def _manifest_column(header: list[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in MANIFEST_COLUMNS:
        if name in lowered:
            return lowered.index(name)
    return None


def _manifest_entries(manifest: Path) -> list[str]:
    """Paths listed in a text manifest (one a line, ``#`` comments) or a CSV (a ``path`` column, else the first)."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the manifest ({exc})", path=manifest,
                          fix="give a text file with one scene path a line, or a CSV with a 'path' column") from None
    if manifest.suffix.lower() != ".csv":
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    column = _manifest_column(rows[0]) if rows else None
    if column is not None:
        rows = rows[1:]
    return [r[column or 0].strip() for r in rows if len(r) > (column or 0) and r[column or 0].strip()]


def _expand_manifest(manifest: Path, exclude: Path | None) -> tuple[Path, list[Path]]:
    files: list[Path] = []
    for entry in _manifest_entries(manifest):
        target = Path(os.path.expanduser(entry))
        target = _absolute(target if target.is_absolute() else manifest.parent / target)
        if glob.has_magic(str(target)):
            files += _expand_glob(str(target), exclude)[1]
        elif target.is_dir():
            files += _scan_directory(target, exclude)
        elif target.is_file():
            files.append(target)
        else:
            raise ConfigError("a manifest entry does not exist", path=f"{manifest}: {entry}",
                              fix="fix or remove the line (relative paths are read from the manifest's folder)")
    root = Path(os.path.commonpath([f.parent for f in files])) if files else manifest.parent
    return root, files


def _expand_input(item: str | os.PathLike, exclude: Path | None) -> tuple[Path, list[Path]]:
    """``(root, scene files)`` for one input."""
    text = os.fspath(item)
    path = _absolute(text)
    if path.is_dir():
        return path, _scan_directory(path, exclude)
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return _expand_manifest(path, exclude)
        return path.parent, [path]
    if glob.has_magic(text):
        return _expand_glob(text, exclude)
    raise ConfigError("input does not exist", path=text,
                      fix="give scene files, directories, glob patterns (quoted) or a .txt/.csv manifest")


def _relative(file: Path, root: Path) -> PurePosixPath:
    try:
        return PurePosixPath(file.relative_to(root).as_posix())
    except ValueError:  # a pattern that climbs out of its own prefix ("a/*/../../b.tif")
        return PurePosixPath(file.name)


def discover_scenes(inputs: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[SceneJob]:
    """The scenes named by ``inputs`` (files, directories, globs, manifests), each with its output location.

    Files under ``exclude`` (the output directory) and hidden files are left out; a scene named twice is kept
    once. Raises :class:`ConfigError` if nothing is found or two scenes would write the same outputs.
    """
    exclude_dir = _absolute(exclude) if exclude is not None else None
    jobs: dict[Path, SceneJob] = {}
    owners: dict[str, Path] = {}
    inputs = list(inputs)
    for item in inputs:
        root, files = _expand_input(item, exclude_dir)
        for file in files:
            if file in jobs:
                continue
            job = SceneJob(file, _relative(file, root))
            if job.output_key in owners:
                raise ConfigError(
                    f"two scenes would write the same outputs ({owners[job.output_key]} and {file})",
                    path=job.output_key,
                    fix="pass their common parent directory (or a manifest) so the output tree keeps them apart")
            owners[job.output_key] = file
            jobs[file] = job
    if not jobs:
        shown = ", ".join(os.fspath(i) for i in inputs) or "<no inputs>"
        raise ConfigError("no scenes found", path=shown,
                          fix="give GeoTIFFs (.tif/.tiff), folders holding them, glob patterns or a manifest")
    return list(jobs.values())


# ---------------------------------------------------------------------------------------------- records


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_identity(path: Path, checksum: bool = False) -> dict:
    """What identifies an input file for resume: size and mtime_ns, plus sha256 if ``checksum``."""
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise SceneReadError(f"cannot read the scene ({exc.strerror or exc})", path=path,
                             fix="check that the file exists and is readable from every worker") from None
    identity: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if checksum:
        identity["sha256"] = file_sha256(path)
    return identity


def settings_key(settings: PredictSettings) -> dict:
    """The prediction settings that a completion record must match (``overwrite`` changes no output)."""
    return {k: v for k, v in settings.to_dict().items() if k != "overwrite"}


def _describe_outputs(outputs: dict[str, Path], base: Path) -> dict[str, dict]:
    return {key: {"path": os.path.relpath(p, base), "size": Path(p).stat().st_size, "sha256": file_sha256(p)}
            for key, p in outputs.items()}


def build_record(job: SceneJob, spec: TaskSpec, outputs: dict[str, Path], identity: dict, extra: dict) -> dict:
    base = job.out_dir(spec.out_root)
    return {
        "eoseg_version": __version__,
        "batch": spec.batch_id,
        "input": {"path": str(job.path), **identity},
        "model": {"refs": list(spec.models), "sha256": spec.model_hash},
        "settings": settings_key(spec.settings),
        "outputs": _describe_outputs(outputs, base),
        "finished": _now(),
        **extra,
    }


def write_json_atomic(path: Path, data: dict) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _output_matches(entry: dict, base: Path) -> bool:
    path = base / entry.get("path", "")
    try:
        return path.stat().st_size == entry.get("size") and file_sha256(path) == entry.get("sha256")
    except OSError:
        return False


def record_mismatch(record: dict | None, job: SceneJob, spec: TaskSpec) -> str | None:
    """Why a completion record no longer describes the scene's outputs, or None when it still does."""
    if record is None:
        return "no completion record"
    identity = input_identity(job.path, checksum=spec.checksum_inputs)
    stored = record.get("input", {})
    checks = (
        (record.get("eoseg_version") == __version__, "eoseg version changed"),
        (all(stored.get(k) == v for k, v in identity.items()), "input changed"),
        (record.get("model", {}).get("sha256") == spec.model_hash, "model changed"),
        (record.get("settings") == json.loads(json.dumps(settings_key(spec.settings))), "settings changed"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    outputs = record.get("outputs") or {}
    base = job.out_dir(spec.out_root)
    if not outputs or not all(_output_matches(e, base) for e in outputs.values()):
        return "outputs missing or changed"
    return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------- class areas


def pixel_areas_m2(crs, transform, height: int) -> np.ndarray | None:
    """Area in m² of one pixel in each row, or None without a CRS.

    Projected CRS: |det(transform)| × (metres per CRS unit)², the same for every row. Geographic CRS: the
    geodesic area on the CRS's ellipsoid (pyproj.Geod) of the first pixel of each row, so the latitude
    dependence is exact row by row (pixels of one row have the same area for a north-up grid).
    """
    if crs is None:
        return None
    if not crs.is_geographic:
        _, metres = crs.linear_units_factor
        return np.full(height, abs(transform.determinant) * metres**2)
    from pyproj import CRS as ProjCRS

    geod = ProjCRS.from_wkt(crs.to_wkt()).get_geod()
    cols = np.array([0.0, 1.0, 1.0, 0.0])
    areas = np.empty(height)
    for row in range(height):
        rows = np.array([row, row, row + 1.0, row + 1.0])
        lons = transform.a * cols + transform.b * rows + transform.c
        lats = transform.d * cols + transform.e * rows + transform.f
        areas[row] = abs(geod.polygon_area_perimeter(lons, lats)[0])
    return areas


def class_areas_km2(classes_path: Path, class_ids: dict[str, int], nodata: int) -> dict[str, float | None]:
    """``{name: km²}`` of each class and of ``nodata`` in a class raster (None values without a CRS)."""
    import rasterio
    from rasterio.windows import Window

    ids = {**class_ids, "nodata": nodata}
    totals = dict.fromkeys(ids, 0.0)
    with rasterio.open(classes_path) as ds:
        row_areas = pixel_areas_m2(ds.crs, ds.transform, ds.height)
        if row_areas is None:
            return dict.fromkeys(ids)
        for top in range(0, ds.height, STRIP_ROWS):
            rows = min(STRIP_ROWS, ds.height - top)
            strip = ds.read(1, window=Window(0, top, ds.width, rows))
            weights = row_areas[top:top + rows]
            for name, value in ids.items():
                totals[name] += float(((strip == value).sum(axis=1) * weights).sum())
    return {name: area / 1e6 for name, area in totals.items()}


def scene_summary(job: SceneJob, classes_path: Path, spec: TaskSpec) -> dict:
    """Per-scene values for the summary: date, class areas and the WGS84 footprint."""
    import rasterio

    from eoseg.outputs.stac import scene_datetime, wgs84_geometry

    when, source = scene_datetime(job.path)
    with rasterio.open(classes_path) as ds:
        geometry, _ = wgs84_geometry(ds.crs, ds.transform, (ds.height, ds.width))
    return {
        "date": None if source == "file_mtime" else when.date().isoformat(),
        "date_source": None if source == "file_mtime" else source,
        "areas_km2": class_areas_km2(classes_path, spec.class_ids, spec.nodata),
        "footprint": geometry,
    }


# ---------------------------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs for any scene of one batch (small and picklable: no model objects)."""

    models: tuple[str, ...]
    settings: PredictSettings
    out_root: Path
    model_hash: str
    batch_id: str
    class_ids: dict[str, int]
    nodata: int
    resume: bool = False
    checksum_inputs: bool = False
    summary: bool = False
    torch_threads: int | None = None
    host_threads: dict[str, int] = field(default_factory=dict)


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


def _worker_host(address: str) -> str:
    from distributed.comm import get_address_host

    return get_address_host(address)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_threads_for(spec: TaskSpec, worker) -> int | None:
    """Torch intra-op threads for this process: explicit, else this host's CPUs shared among its Dask threads."""
    if spec.torch_threads:
        return spec.torch_threads
    if worker is None:
        return None
    host_threads = spec.host_threads.get(_worker_host(worker.address))
    if not host_threads:
        return 1
    return max(1, _available_cpus() // host_threads)


def _configure_process(spec: TaskSpec, worker) -> None:
    threads = torch_threads_for(spec, worker)
    with _LOCK:
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


def _existing_outputs(job: SceneJob, spec: TaskSpec) -> list[Path]:
    plan = output_files(job.out_dir(spec.out_root), job.stem, probabilities=spec.settings.probabilities)
    return [p for p in [*plan.files(), job.record_path(spec.out_root)] if p.exists()]


def _claim(job: SceneJob, spec: TaskSpec, worker) -> str | None:
    """Take the scene for this batch; returns the worker that held it before in this batch, if any.

    Raises :class:`OutputExistsError` when outputs exist and neither overwrite, resume nor an own claim
    (a previous attempt of this batch) allows replacing them.
    """
    claim_path = job.claim_path(spec.out_root)
    claim = read_json(claim_path)
    own = claim is not None and claim.get("batch") == spec.batch_id
    if not (spec.settings.overwrite or spec.resume or own):
        existing = _existing_outputs(job, spec)
        if existing:
            raise OutputExistsError("output exists", path=existing[0],
                                    fix="pass --overwrite, or --resume to keep the scenes that finished")
    out_dir = job.out_dir(spec.out_root)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory ({exc.strerror or exc})", path=out_dir,
                          fix="choose a writable directory with --out") from None
    with contextlib.suppress(FileNotFoundError):
        job.record_path(spec.out_root).unlink()
    cleanup_temporaries(out_dir, job.stem)
    write_json_atomic(claim_path, {"batch": spec.batch_id, "worker": getattr(worker, "address", None),
                                   "worker_name": str(getattr(worker, "name", "")), "pid": os.getpid(),
                                   "started": _now()})
    return claim.get("worker") if own else None


def _release(job: SceneJob, spec: TaskSpec) -> None:
    with contextlib.suppress(FileNotFoundError):
        job.claim_path(spec.out_root).unlink()


def _remove_outputs(job: SceneJob, spec: TaskSpec) -> None:
    """A scene that failed after its outputs were begun leaves none of them (nor a record)."""
    for path in _existing_outputs(job, spec):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    cleanup_temporaries(job.out_dir(spec.out_root), job.stem)


def _relative_outputs(record: dict, job: SceneJob, spec: TaskSpec) -> dict[str, str]:
    base = job.out_dir(spec.out_root)
    return {k: os.path.relpath(base / e["path"], spec.out_root) for k, e in (record.get("outputs") or {}).items()}


def _outcome(job: SceneJob, worker) -> dict:
    return {"scene": str(job.path), "relpath": str(job.relpath), "status": None, "error_type": None,
            "error": None, "worker": getattr(worker, "address", None), "started": _now(), "seconds": None,
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
    _release(job, spec)  # a claim left by a run killed between record and release
    out.update(status="ok" if own_batch_only else "skipped", outputs=_relative_outputs(record or {}, job, spec),
               record=os.path.relpath(record_path, spec.out_root))
    return True


def _predict_and_record(job: SceneJob, spec: TaskSpec, out: dict) -> None:
    identity = input_identity(job.path, checksum=spec.checksum_inputs)
    predictor, out["load_seconds"] = worker_predictor(spec)
    if spec.model_hash and predictor.model_hash != spec.model_hash:
        raise ConfigError("the worker's model differs from the client's (bundle sha256)", path=",".join(spec.models),
                          fix="give every worker the same bundle (a shared path) or pass a bundle path")
    try:
        result = predictor.predict(job.path, job.out_dir(spec.out_root), progress=False, stem=job.stem)
        outputs = dict(result.outputs)
        aux = outputs["classes"].with_name(outputs["classes"].name + ".aux.xml")
        if aux.exists():
            outputs["classes_metadata"] = aux
        extra = {"height": result.height, "width": result.width, "tiles": result.tiles,
                 "device": result.device, "precision": result.precision, "seconds": round(result.seconds, 3)}
        record = build_record(job, spec, outputs, identity, extra)
        write_json_atomic(job.record_path(spec.out_root), record)
    except BaseException:
        _remove_outputs(job, spec)
        raise
    out.update(status="ok", predict_seconds=round(result.seconds, 3), height=result.height, width=result.width,
               tiles=result.tiles, device=result.device, precision=result.precision,
               outputs=_relative_outputs(record, job, spec),
               record=os.path.relpath(job.record_path(spec.out_root), spec.out_root))


def _add_summary(job: SceneJob, spec: TaskSpec, out: dict) -> None:
    if spec.summary and out["status"] in ("ok", "skipped") and "classes" in out["outputs"]:
        out.update(scene_summary(job, spec.out_root / out["outputs"]["classes"], spec))


def run_scene(job: SceneJob, spec: TaskSpec) -> dict:
    """The Dask task: process one scene and return its outcome as plain values.

    Errors of the scene itself (:class:`EosegError`: corrupt, no CRS, too few bands, outputs exist...)
    come back as ``status="failed"``; anything else propagates so Dask can retry the task.
    """
    t0 = time.perf_counter()
    worker = _current_worker()
    out = _outcome(job, worker)
    _configure_process(spec, worker)
    claimed = False
    try:
        done = _skip_if_done(job, spec, out) if spec.resume else _skip_if_done(job, spec, out, own_batch_only=True)
        if not done:
            out["recovered_from"] = _claim(job, spec, worker)
            claimed = True
            _predict_and_record(job, spec, out)
        _add_summary(job, spec, out)
    except EosegError as exc:
        out.update(status="failed", error_type=type(exc).__name__, error=str(exc))
    finally:
        if claimed and out["status"] is not None:
            _release(job, spec)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["finished"] = _now()
    return out


# ---------------------------------------------------------------------------------------------- engine


@dataclass
class Engine:
    """A connected Dask client and what the batch needs to know about its cluster."""

    client: Any
    workers: int
    host_threads: dict[str, int]
    gpu: bool
    dashboard: str | None


def _wants_cuda(settings: PredictSettings) -> bool:
    """Whether the workers will run on CUDA (eoseg.device's policy; asking for CUDA without one fails here)."""
    from eoseg.device import resolve_device

    return resolve_device(settings.device).type == "cuda"


def local_worker_count(workers: int | None, threads_per_worker: int, gpus: int = 0) -> int:
    """Workers of a local cluster: as asked, else one per GPU, else the CPUs divided by threads per worker."""
    if workers is not None:
        return workers
    if gpus:
        return gpus
    return max(1, _available_cpus() // threads_per_worker)


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
        host = _worker_host(address)
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
    cuda = _wants_cuda(settings)
    with quiet_distributed(logging.ERROR):
        cluster, n = _local_cluster(workers, threads_per_worker, cuda, dashboard_address)
        try:
            with Client(cluster) as client:
                yield Engine(client, n, {"127.0.0.1": n * threads_per_worker}, cuda, _dashboard(client))
        finally:
            cluster.close()


# ---------------------------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class BatchReport:
    """What a batch did: one plain dict per scene (input order), counts by status, where the report is."""

    results: list[dict]
    counts: dict[str, int]
    report_path: Path
    summary_path: Path | None
    seconds: float
    workers: int
    dashboard: str | None = None

    @property
    def ok(self) -> bool:
        """True when no scene failed (skipped scenes finished in an earlier run)."""
        return self.counts.get("failed", 0) == 0

    @property
    def scenes_per_second(self) -> float:
        return len(self.results) / max(self.seconds, 1e-9)

    def table(self) -> str:
        """A short plain-text summary: counts by status, then the failed scenes with their errors."""
        lines = [f"{'status':<8} {'scenes':>6}"]
        lines += [f"{status:<8} {self.counts.get(status, 0):>6}" for status in STATUSES]
        lines.append(f"{'total':<8} {len(self.results):>6}   in {self.seconds:.1f} s "
                     f"({self.scenes_per_second:.2f} scenes/s, {self.workers} worker(s))")
        failed = [r for r in self.results if r["status"] == "failed"]
        if failed:
            lines.append("failed:")
            lines += [f"  {r['relpath']}: {r['error_type']}: {r['error']}" for r in failed]
        lines.append(f"report: {self.report_path}")
        if self.summary_path:
            lines.append(f"summary: {self.summary_path}")
        return "\n".join(lines)


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
    out = _outcome(job, None)
    out.update(status="failed", error_type=type(exc).__name__, error=str(exc) or repr(exc), started=None,
               finished=_now())
    return out


def _collect(future, job: SceneJob) -> dict:
    if future.status == "finished":
        return future.result()
    try:
        exc = future.exception()
    except Exception as cancelled:  # noqa: BLE001 - a cancelled future raises instead of returning
        exc = cancelled
    return _failed_outcome(job, exc)


class _ReportWriter:
    """Streams outcomes to a hidden temporary as they arrive; :meth:`finish` writes the report in input order."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = temporary_path(path)
        self.fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()

    @staticmethod
    def line(outcome: dict) -> str:
        """One JSON line; the footprint (for the .gpkg summary only) is left out to keep lines short."""
        return json.dumps({k: v for k, v in outcome.items() if k != "footprint"}, default=str) + "\n"

    def add(self, outcome: dict) -> None:
        self.fh.write(self.line(outcome))
        self.fh.flush()

    def finish(self, ordered: list[dict]) -> None:
        self.fh.close()
        with open(self.tmp, "w", encoding="utf-8") as fh:
            fh.writelines(self.line(o) for o in ordered)
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        self.fh.close()


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


def _run_tasks(engine: Engine, jobs: list[SceneJob], spec: TaskSpec, retries: int, writer: _ReportWriter,
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


def _count(results: list[dict]) -> dict[str, int]:
    return {status: sum(r["status"] == status for r in results) for status in STATUSES}


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
) -> BatchReport:
    """Segment every scene named by ``inputs`` into ``out_dir`` on Dask; see the module docstring.

    ``workers`` / ``threads_per_worker`` size a local cluster (default: one single-threaded worker per CPU,
    or one worker per GPU with CUDA); ``scheduler`` (``tcp://HOST:PORT``) uses an existing cluster instead.
    ``torch_threads`` (default: the host's CPUs divided by its Dask threads) bounds PyTorch in each worker.
    ``retries`` applies to unexpected task errors; scene errors are results. ``summary`` (.csv or .gpkg)
    gets per-scene class areas in km². ``echo`` receives progress lines (dashboard address); the per-scene
    outcomes are in the returned :class:`BatchReport` and in ``out_dir/report.jsonl``.
    """
    start = time.perf_counter()
    say = echo or log.info
    settings = as_settings(settings)
    _check_arguments(workers, threads_per_worker, retries, torch_threads, summary, scheduler)
    out_root = Path(out_dir).expanduser().resolve()
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    jobs = discover_scenes(items, exclude=out_root)
    models = _model_refs(model)
    model_hash, class_ids, nodata = _model_identity(models)
    _make_out_root(out_root)
    writer = _ReportWriter(out_root / REPORT_NAME)
    try:
        with open_engine(scheduler, workers, threads_per_worker, settings, dashboard_address) as engine:
            say(f"eoseg batch: {len(jobs)} scene(s) on {engine.workers} worker(s); Dask dashboard: "
                f"{engine.dashboard or 'not available'}")
            spec = TaskSpec(models=models, settings=settings, out_root=out_root, model_hash=model_hash,
                            batch_id=uuid.uuid4().hex, class_ids=class_ids, nodata=nodata, resume=resume,
                            checksum_inputs=checksum_inputs, summary=summary is not None,
                            torch_threads=torch_threads, host_threads=engine.host_threads)
            outcomes = _run_tasks(engine, jobs, spec, retries, writer, progress)
    except BaseException:
        writer.abandon()
        raise
    results = [outcomes[job.path] for job in jobs]
    writer.finish(results)
    summary_path = write_summary(Path(summary), results, list(class_ids)) if summary is not None else None
    return BatchReport(results=results, counts=_count(results), report_path=writer.path, summary_path=summary_path,
                       seconds=time.perf_counter() - start, workers=engine.workers, dashboard=engine.dashboard)


def _make_out_root(out_root: Path) -> None:
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory ({exc.strerror or exc})", path=out_root,
                          fix="choose a writable directory with --out") from None


# ---------------------------------------------------------------------------------------------- summary


def summary_rows(results: list[dict], class_names: list[str]) -> list[dict]:
    """One row per finished scene (by date, then scene): scene, date, date_source, <class>_km2..., nodata_km2."""
    rows = []
    for r in results:
        if r["status"] not in ("ok", "skipped") or "areas_km2" not in r:
            continue
        row = {"scene": r["relpath"], "date": r.get("date"), "date_source": r.get("date_source")}
        areas = r["areas_km2"]
        row.update({f"{name}_km2": areas.get(name) for name in [*class_names, "nodata"]})
        rows.append(row)
    return sorted(rows, key=lambda row: (row["date"] is None, row["date"] or "", row["scene"]))


def _write_csv(tmp: Path, rows: list[dict], columns: list[str]) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else round(v, 6) if isinstance(v, float) else v)
                             for k, v in row.items()})


def _write_gpkg(tmp: Path, rows: list[dict], columns: list[str], results: list[dict]) -> None:
    import geopandas as gpd
    from shapely.geometry import shape

    footprints = {r["relpath"]: r.get("footprint") for r in results}
    geometry = [shape(footprints[row["scene"]]) if footprints.get(row["scene"]) else None for row in rows]
    frame = gpd.GeoDataFrame(rows, columns=columns, geometry=geometry, crs="EPSG:4326")
    frame.to_file(tmp, driver="GPKG", layer="scenes")


def write_summary(path: Path, results: list[dict], class_names: list[str]) -> Path:
    """Write the per-scene class areas as CSV, or as a GeoPackage of scene footprints (EPSG:4326)."""
    path = Path(path).expanduser().resolve()
    columns = ["scene", "date", "date_source", *[f"{n}_km2" for n in [*class_names, "nodata"]]]
    rows = summary_rows(results, class_names)
    _make_out_root(path.parent)
    with atomic_write(path) as tmp:
        if path.suffix.lower() == ".gpkg":
            _write_gpkg(Path(tmp), rows, columns, results)
        else:
            _write_csv(Path(tmp), rows, columns)
    return path


__all__ = ["BatchReport", "SceneJob", "TaskSpec", "class_areas_km2", "discover_scenes", "pixel_areas_m2",
           "record_mismatch", "run_batch", "run_scene", "write_summary"]
