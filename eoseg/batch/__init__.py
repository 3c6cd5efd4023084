"""Batch prediction over archives of scenes on Dask (``dask.distributed``), resumable, failures kept local.

:func:`run_batch` finds the scenes (directories searched recursively for GeoTIFFs, glob patterns, text / CSV
manifests), starts a local cluster sized to the machine or connects to an existing scheduler, runs one task
per scene, and merges its outcomes into ``report.jsonl`` (one line per scene of the output directory) and
optionally a per-scene class-area summary.

Modules, one concern each: :mod:`~eoseg.batch.discovery` (which scenes, where their outputs go),
:mod:`~eoseg.batch.jobs` (a scene job and the task spec), :mod:`~eoseg.batch.records` (completion records),
:mod:`~eoseg.batch.claims` (exclusive claims; an attempt removes only what it wrote),
:mod:`~eoseg.batch.worker` (the Dask task), :mod:`~eoseg.batch.engine` (the cluster),
:mod:`~eoseg.batch.driver` (:func:`run_batch`), :mod:`~eoseg.batch.report` and :mod:`~eoseg.batch.summary`.

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
with sha256). ``resume=True`` skips scenes whose record still matches and redoes the others.

Several writers: a scene is processed only under its claim ``.<stem>.claim.json``, created with ``O_EXCL`` (so
two batches on the same ``--out``, or a task Dask duplicated, never write one scene at once: the second waits,
then finds the scene done). The claim of a dead holder (on this host: its pid is gone or reused by a later
process; on another: older than an hour) is broken; a retry of the same batch then replaces that scene's
partial outputs. Every temporary name is unique (pid + token) and fsynced before its rename. An attempt that
fails removes only the files it wrote itself and only while it still holds the claim, so a "zombie" attempt
never deletes the outputs and record of the attempt that finished the scene. After a batch every scene is
either complete (outputs + matching record) or has no record.

Summary (``summary=``, .csv or .gpkg): one row per finished scene, sorted by date: ``scene, date,
date_source, <class>_km2..., nodata_km2``. Areas are ellipsoidal (:mod:`eoseg.outputs.areas`, the rule the
polygons' ``area_m2`` follows), whatever the CRS; scenes without a CRS get empty areas. The date is the
acquisition date found by :func:`eoseg.outputs.stac.scene_datetime` (tags, then the file name), left empty
when only the file's mtime is known. The .gpkg variant adds each scene's footprint (EPSG:4326) as the geometry.
"""

from eoseg.batch.discovery import discover_scenes
from eoseg.batch.driver import run_batch
from eoseg.batch.engine import gpu_worker_specs, local_worker_count
from eoseg.batch.jobs import SceneJob, TaskSpec
from eoseg.batch.records import input_identity, read_json, record_mismatch
from eoseg.batch.report import BatchReport
from eoseg.batch.summary import class_areas_km2, write_summary
from eoseg.batch.worker import run_scene, torch_threads_for

__all__ = ["BatchReport", "SceneJob", "TaskSpec", "class_areas_km2", "discover_scenes", "gpu_worker_specs",
           "input_identity", "local_worker_count", "read_json", "record_mismatch", "run_batch", "run_scene",
           "torch_threads_for", "write_summary"]
