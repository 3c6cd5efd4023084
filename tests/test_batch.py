"""eoseg.batch: scene discovery, completion records, class areas, and real Dask clusters with faults.

Archives are made of 128 × 128 crops of the real test scenes (one 128-px tile each with the random
bundle), copied under several names. Cluster tests bind everything to 127.0.0.1 and stop every process
they start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Proj
from rasterio.crs import CRS
from rasterio.windows import Window

from eoseg.batch import (
    SceneJob,
    TaskSpec,
    class_areas_km2,
    discover_scenes,
    gpu_worker_specs,
    input_identity,
    read_json,
    record_mismatch,
    run_batch,
    run_scene,
    torch_threads_for,
    write_summary,
)
from eoseg.batch.claims import try_claim
from eoseg.bundle import bundle_sha256
from eoseg.checksums import file_sha256
from eoseg.errors import ConfigError
from eoseg.outputs.areas import block_pixel_areas
from eoseg.outputs.cog import validate_cog
from eoseg.predict import PredictSettings

OFFSETS = [(0, 0), (128, 0), (0, 128), (128, 128), (192, 64), (64, 64), (96, 0), (160, 128)]
FP32 = PredictSettings(precision="fp32")
EOSEG = [str(Path(sys.executable).with_name("eoseg"))]


# ---------------------------------------------------------------------------------------------- helpers


def crop(src: Path, dst: Path, col: int = 0, row: int = 0, size: int = 128) -> Path:
    """A size × size crop of a real scene, keeping CRS, band descriptions, nodata and tags."""
    with rasterio.open(src) as ds:
        window = Window(col, row, min(size, ds.width - col), min(size, ds.height - row))
        profile = ds.profile | {"width": int(window.width), "height": int(window.height),
                                "transform": ds.transform @ Affine.translation(col, row), "driver": "GTiff"}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=window))
            out.descriptions = ds.descriptions
            out.update_tags(**ds.tags())
    return dst


def make_archive(root: Path, scene: Path, n: int, prefix: str = "S2A_201601") -> list[Path]:
    """``n`` crops named like a dated archive (S2A_20160110_0.tif, ...), some in sub-folders."""
    paths = []
    for i in range(n):
        sub = root / ("2016" if i % 2 else "") / f"{prefix}{10 + i:02d}_{i}.tif"
        paths.append(crop(scene, sub, *OFFSETS[i % len(OFFSETS)]))
    return paths


def poison(path: Path, source: Path) -> Path:
    """A corrupt GeoTIFF: the first 20 kB of a real one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes()[:20000])
    return path


def spec_for(bundle: Path, out: Path, **kw) -> TaskSpec:
    values = dict(models=(str(bundle),), settings=FP32, out_root=out, batch_id="test-batch",
                  class_ids={"water": 0, "whitewater": 1, "sand": 2, "other": 3}, nodata=255)
    values = values | kw
    if "model_hash" not in values:
        values["model_hash"] = bundle_sha256(bundle)
    return TaskSpec(**values)


def checksums(paths) -> dict[Path, tuple[str, int]]:
    return {p: (file_sha256(p), p.stat().st_mtime_ns) for p in paths}


def report_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]


def assert_valid_outputs(out: Path, outcome: dict) -> None:
    assert outcome["status"] == "ok", outcome
    classes = out / outcome["outputs"]["classes"]
    valid, errors, _ = validate_cog(classes)
    assert valid, errors
    record = read_json(out / outcome["record"])
    assert set(record["outputs"]) >= {"classes", "polygons", "stac", "style"}


def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(out: Path) -> list[Path]:
    """Temporaries and claims: nothing hidden may survive a finished batch."""
    return [p for p in out.rglob(".*") if p.is_file()]


# ---------------------------------------------------------------------------------------------- discovery


def test_discover_directories_globs_and_manifests(tmp_path, s2_scene):
    arch = tmp_path / "arch"
    a = crop(s2_scene, arch / "a.tif")
    b = crop(s2_scene, arch / "2019" / "b.TIF")
    crop(s2_scene, arch / ".cache" / "hidden.tif")
    (arch / "notes.txt").write_text("not a scene")
    out = arch / "results"
    crop(s2_scene, out / "a_classes.tif")  # earlier outputs under the input folder are not inputs

    jobs = discover_scenes([arch], exclude=out)
    assert [(j.path, str(j.relpath)) for j in jobs] == [(b, "2019/b.TIF"), (a, "a.tif")]
    assert jobs[0].out_dir(out) == out / "2019" and jobs[0].record_path(out) == out / "2019" / "b.done.json"

    globbed = discover_scenes([str(arch / "*" / "*.TIF")])
    assert [str(j.relpath) for j in globbed] == ["2019/b.TIF"]

    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# scenes\n{a}\n\narch/2019/b.TIF\n")
    assert [str(j.relpath) for j in discover_scenes([manifest])] == ["a.tif", "2019/b.TIF"]
    table = tmp_path / "list.csv"
    table.write_text(f"date,path\n2016-01-01,{a}\n2019-01-01,arch/2019/b.TIF\n")
    assert [j.path for j in discover_scenes([table, a])] == [a, b]  # a scene named twice is kept once


def test_discover_refuses_clashes_missing_and_empty(tmp_path, s2_scene):
    one = crop(s2_scene, tmp_path / "x" / "scene.tif")
    two = crop(s2_scene, tmp_path / "y" / "scene.tif")
    with pytest.raises(ConfigError, match="same outputs") as clash:
        discover_scenes([tmp_path / "x", tmp_path / "y"])
    assert "common parent" in str(clash.value)
    assert len(discover_scenes([tmp_path])) == 2 and {one, two} == {j.path for j in discover_scenes([tmp_path])}
    with pytest.raises(ConfigError, match="does not exist"):
        discover_scenes([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no scenes found"):
        discover_scenes([tmp_path / "empty"])
    bad_manifest = tmp_path / "m.txt"
    bad_manifest.write_text("nowhere.tif\n")
    with pytest.raises(ConfigError, match="manifest entry"):
        discover_scenes([bad_manifest])


# ---------------------------------------------------------------------------------------------- the task, in process


def test_run_scene_results_records_and_policies(tmp_path, s2_scene, collar_scene, random_bundle):
    scene = crop(s2_scene, tmp_path / "in" / "S2A_20160112_a.tif")
    job = SceneJob(scene, Path("S2A_20160112_a.tif"))
    out = tmp_path / "out"
    spec = spec_for(random_bundle, out, summary=True)

    done = run_scene(job, spec)
    assert_valid_outputs(out, done)
    assert done["date"] == "2016-01-12" and done["date_source"] == "filename"
    assert sum(done["areas_km2"].values()) == pytest.approx(128 * 128 * 100 / 1e6, rel=1e-3)  # UTM scale factor
    assert record_mismatch(read_json(job.record_path(out)), job, spec) is None
    assert not leftovers(out)

    before = checksums(out.glob("S2A_*"))
    # a later batch without overwrite or resume: refused, outputs untouched
    again = run_scene(job, spec_for(random_bundle, out, summary=True, batch_id="a-later-batch"))
    assert again["status"] == "failed" and again["error_type"] == "OutputExistsError"
    assert "--resume" in again["error"] and read_json(job.record_path(out)) is not None
    # the same batch again: a retry after the worker died between finishing and handing back its result
    retry = run_scene(job, spec)
    assert retry["status"] == "ok" and retry["outputs"] == done["outputs"]
    assert checksums(out.glob("S2A_*")) == before

    skipped = run_scene(job, spec_for(random_bundle, out, resume=True))
    assert skipped["status"] == "skipped" and checksums(out.glob("S2A_*")) == before

    record = read_json(job.record_path(out))
    assert record_mismatch(record, job, spec_for(random_bundle, out, settings=PredictSettings(tta="flip")))
    assert record_mismatch(record, job, spec_for(random_bundle, out, model_hash="other")) == "model changed"
    os.utime(scene, ns=(time.time_ns(), time.time_ns()))
    assert record_mismatch(record, job, spec) == "input changed"

    bad = run_scene(SceneJob(poison(tmp_path / "in" / "bad.tif", s2_scene), Path("bad.tif")), spec)
    assert (bad["status"], bad["error_type"]) == ("failed", "SceneReadError") and str(tmp_path) in bad["error"]
    bands = run_scene(SceneJob(collar_scene, Path("collar.tif")), spec)
    assert (bands["status"], bands["error_type"]) == ("failed", "BandMappingError")
    assert not list(out.glob("bad*")) and not list(out.glob("collar*")) and not leftovers(out)


def test_own_claim_lets_a_retry_replace_partial_outputs(tmp_path, s2_scene, random_bundle):
    """A worker died mid-scene: its claim (same batch) allows the retry to replace what it left."""
    job = SceneJob(crop(s2_scene, tmp_path / "a.tif"), Path("a.tif"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_classes.tif").write_bytes(b"half")  # renamed into place before the death
    (out / ".a_polygons.tmp.gpkg").write_bytes(b"partial")
    claim = {"batch": "test-batch", "worker": "tcp://127.0.0.1:1", "pid": dead_pid(), "host": socket.gethostname()}
    job.claim_path(out).write_text(json.dumps(claim))

    other_batch = run_scene(job, spec_for(random_bundle, out, batch_id="another"))
    assert other_batch["error_type"] == "OutputExistsError"
    retry = run_scene(job, spec_for(random_bundle, out))
    assert retry["recovered_from"] == "tcp://127.0.0.1:1"
    assert_valid_outputs(out, retry)
    assert not leftovers(out)


# ---------------------------------------------------------------------------------------------- several writers


def test_claims_are_exclusive_and_stale_ones_are_broken(tmp_path):
    job = SceneJob(tmp_path / "a.tif", Path("a.tif"))
    spec = spec_for(tmp_path, tmp_path / "out", model_hash="x")
    first = try_claim(job, spec, None)
    assert first is not None and first.held()
    assert try_claim(job, spec, None) is None  # held by a live process (this one): O_EXCL refuses a second
    stale = read_json(first.path) | {"pid": dead_pid()}
    first.path.write_text(json.dumps(stale))
    second = try_claim(job, spec, None)
    assert second is not None and second.token != first.token and second.held() and not first.held()
    first.release()  # an attempt that lost its claim leaves the new holder's alone
    assert second.held()
    second.release()
    assert not second.path.exists() and not leftovers(tmp_path)

    elsewhere = {"batch": "b", "token": "t", "host": "another-host", "pid": dead_pid()}
    second.path.write_text(json.dumps(elsewhere))  # another host's pid cannot be checked: live for an hour
    assert try_claim(job, spec, None) is None
    old = time.time() - 2 * 3600
    os.utime(second.path, (old, old))
    assert try_claim(job, spec, None) is not None


def test_a_failing_duplicate_task_leaves_the_finished_scene_intact(tmp_path, s2_scene, random_bundle, monkeypatch):
    """A "zombie" attempt (Dask rescheduled its task while it still ran) fails after the other attempt finished."""
    import eoseg.batch.worker as worker

    job = SceneJob(crop(s2_scene, tmp_path / "a.tif"), Path("a.tif"))
    out = tmp_path / "out"
    spec = spec_for(random_bundle, out)
    real = worker.worker_predictor
    finished: dict = {}

    class Zombie:
        def __init__(self, predictor):
            self.predictor, self.model_hash = predictor, predictor.model_hash

        def predict(self, *args, **kw):
            self.predictor.predict(*args, **kw)  # the zombie's outputs are in place
            claim = job.claim_path(out)  # it stops responding; its claim goes stale and its duplicate runs
            claim.write_text(json.dumps(read_json(claim) | {"pid": dead_pid()}))
            monkeypatch.setattr(worker, "worker_predictor", real)
            finished.update(run_scene(job, spec))
            raise RuntimeError("the zombie dies")

    monkeypatch.setattr(worker, "worker_predictor", lambda s: (Zombie(real(s)[0]), 0.0))
    with pytest.raises(RuntimeError, match="zombie"):
        run_scene(job, spec)
    assert_valid_outputs(out, finished)
    assert record_mismatch(read_json(job.record_path(out)), job, spec) is None
    assert not leftovers(out)


def test_two_concurrent_batches_on_one_out_lose_nothing(tmp_path, s2_scene, random_bundle):
    arch = tmp_path / "arch"
    make_archive(arch, s2_scene, 6)
    out = tmp_path / "out"
    args = [*EOSEG, "batch", str(arch), "--model", str(random_bundle), "--out", str(out), "--workers", "1",
            "--precision", "fp32", "--resume", "--dashboard-address", "127.0.0.1:0", "-q"]
    procs = [subprocess.Popen(args, env=_eoseg_env(), start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    finally:
        for proc in procs:
            _stop(proc, group=True)
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    records = sorted(out.rglob("*.done.json"))
    assert len(records) == 6
    for path in records:
        record = read_json(path)
        job = SceneJob(Path(record["input"]["path"]), Path(path.relative_to(out).as_posix().removesuffix(".done.json")
                                                               + ".tif"))
        assert record_mismatch(record, job, spec_for(random_bundle, out)) is None
        assert validate_cog(job.out_dir(out) / f"{job.stem}_classes.tif")[0]
    assert not leftovers(out)


# ---------------------------------------------------------------------------------------------- class areas


def write_classes(path: Path, data: np.ndarray, crs, transform) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform, nodata=255) as ds:
        ds.write(data, 1)
    return path


IDS = {"water": 0, "whitewater": 1, "sand": 2, "other": 3}


def test_class_areas_projected_feet_geographic_and_none(tmp_path):
    data = np.array([[0, 0, 1, 255], [2, 3, 3, 3]], dtype=np.uint8)
    utm = write_classes(tmp_path / "utm.tif", data, CRS.from_epsg(32618), Affine(10, 0, 400000, 0, -10, 4e6))
    areas = class_areas_km2(utm, IDS, 255)
    # ellipsoidal: the planar grid area divided by the projection's areal scale there (~0.9994 at 100 km west)
    scale = Proj("EPSG:32618").get_factors(*Proj("EPSG:32618")(400020, 4e6 - 10, inverse=True)).areal_scale
    assert abs(scale - 1) > 3e-4
    planar = {"water": 2e-4, "whitewater": 1e-4, "sand": 1e-4, "other": 3e-4, "nodata": 1e-4}
    assert areas == pytest.approx({k: v / scale for k, v in planar.items()}, rel=1e-6)

    feet = write_classes(tmp_path / "ft.tif", data, CRS.from_epsg(2263), Affine(10, 0, 9e5, 0, -10, 2e5))
    scale = Proj("EPSG:2263").get_factors(*Proj("EPSG:2263")(9e5 + 20, 2e5 - 10, inverse=True)).areal_scale
    assert class_areas_km2(feet, IDS, 255)["other"] == pytest.approx(3 * (10 * 1200 / 3937) ** 2 / scale / 1e6,
                                                                      rel=1e-6)

    # 0.01° pixels at 0° and 60°N against the ellipsoid's area element M(φ)·N(φ)·cos φ·dφ·dλ (WGS84)
    a, e2, step = 6378137.0, 0.00669437999014, np.radians(0.01)
    for lat in (0.005, 60.005):
        w = 1 - e2 * np.sin(np.radians(lat)) ** 2
        expected = a * (1 - e2) / w**1.5 * a / w**0.5 * np.cos(np.radians(lat)) * step * step
        got = block_pixel_areas(Affine(0.01, 0, 10, 0, -0.01, lat + 0.005), CRS.from_epsg(4326), (1, 1))[0, 0]
        assert got == pytest.approx(expected, rel=1e-4)
    geo = write_classes(tmp_path / "geo.tif", data, CRS.from_epsg(4326), Affine(0.01, 0, 10, 0, -0.01, 60.01))
    second_row = block_pixel_areas(Affine(0.01, 0, 10, 0, -0.01, 60.0), CRS.from_epsg(4326), (1, 1))[0, 0]
    assert class_areas_km2(geo, IDS, 255)["other"] == pytest.approx(3 * second_row / 1e6, rel=1e-6)

    none = write_classes(tmp_path / "none.tif", data, None, Affine.identity())
    assert class_areas_km2(none, IDS, 255) == dict.fromkeys([*IDS, "nodata"])


def test_write_summary_csv_and_gpkg(tmp_path):
    import geopandas as gpd

    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    results = [
        {"relpath": "a/S2_20190101.tif", "status": "ok", "date": "2019-01-01", "date_source": "filename",
         "areas_km2": {"water": 1.5, "whitewater": 0.25, "sand": 0.5, "other": 2.0, "nodata": 0.0},
         "footprint": square},
        {"relpath": "bad.tif", "status": "failed"},
        {"relpath": "old.tif", "status": "skipped", "date": None, "date_source": None,
         "areas_km2": dict.fromkeys(["water", "whitewater", "sand", "other", "nodata"]), "footprint": None},
    ]
    csv_path = write_summary(tmp_path / "s.csv", results, list(IDS))
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ("scene,date,date_source,sensor,cloud_fraction,valid_km2,water_km2,whitewater_km2,sand_km2,"
                        "other_km2,nodata_km2")
    assert lines[1] == "a/S2_20190101.tif,2019-01-01,filename,,,4.25,1.5,0.25,0.5,2.0,0.0" and len(lines) == 3
    frame = gpd.read_file(write_summary(tmp_path / "s.gpkg", results, list(IDS)))
    assert frame.crs.to_epsg() == 4326 and list(frame["scene"]) == ["a/S2_20190101.tif", "old.tif"]
    assert frame.geometry.iloc[0].area == pytest.approx(1.0) and frame.geometry.iloc[1] is None


# ---------------------------------------------------------------------------------------------- engine details


def test_worker_sizing_threads_and_gpu_specs():
    spec = spec_for(Path("."), Path("."), model_hash="x", host_threads={"127.0.0.1": 2})
    worker = SimpleNamespace(address="tcp://127.0.0.1:4000")
    cpus = len(os.sched_getaffinity(0))
    assert torch_threads_for(spec, worker) == max(1, cpus // 2)
    assert torch_threads_for(spec, SimpleNamespace(address="tcp://10.9.9.9:1")) == 1  # unknown host: 1 per thread
    assert torch_threads_for(spec_for(Path("."), Path("."), model_hash="x", torch_threads=3), worker) == 3
    specs = gpu_worker_specs(2, 1)
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "1"]
    assert all(s["options"]["resources"] == {"GPU": 1} for s in specs.values())


def test_identity_size_mtime_and_optional_checksum(tmp_path):
    path = tmp_path / "f.tif"
    path.write_bytes(b"abc")
    assert set(input_identity(path)) == {"size", "mtime_ns"}
    assert input_identity(path, checksum=True)["sha256"].startswith("ba7816bf")


# ---------------------------------------------------------------------------------------------- local cluster


def test_local_cluster_poison_scenes_fail_alone_and_summary(tmp_path, s2_scene, nocrs_scene, collar_scene,
                                                            random_bundle):
    arch = tmp_path / "arch"
    good = make_archive(arch, s2_scene, 4)
    poison(arch / "corrupt.tif", s2_scene)
    crop(nocrs_scene, arch / "nocrs.tif")
    crop(collar_scene, arch / "three_bands.tif")
    out = tmp_path / "out"
    report = run_batch(arch, random_bundle, out, settings=FP32, workers=2, summary=out / "summary.gpkg",
                       dashboard_address="127.0.0.1:0", progress=False)

    assert report.counts == {"ok": 4, "failed": 3, "skipped": 0, "too_cloudy": 0}
    assert not report.ok and report.workers == 2
    lines = report_lines(out)
    assert [line["relpath"] for line in lines] == [r["relpath"] for r in report.results]
    errors = {line["relpath"]: line["error_type"] for line in lines if line["status"] == "failed"}
    assert errors == {"corrupt.tif": "SceneReadError", "nocrs.tif": "GeoreferenceError",
                      "three_bands.tif": "BandMappingError"}
    for line in lines:
        assert {"status", "error_type", "error", "seconds", "outputs", "worker"} <= set(line)
        if line["status"] == "ok":
            assert_valid_outputs(out, line)
    assert len({r["worker"] for r in report.results}) == 2
    loads = [r["load_seconds"] for r in report.results if r["load_seconds"]]
    assert len(loads) <= 2  # one model load per worker process, then reused
    assert {str(p.relative_to(arch)) for p in good} == {r["relpath"] for r in report.results if r["status"] == "ok"}
    assert (out / "2016" / "S2A_20160111_1_classes.tif").exists()  # the tree mirrors the archive

    import geopandas as gpd

    frame = gpd.read_file(out / "summary.gpkg")
    assert len(frame) == 4 and frame.crs.to_epsg() == 4326
    total = frame[["water_km2", "whitewater_km2", "sand_km2", "other_km2", "nodata_km2"]].sum(axis=1)
    assert np.allclose(total, 128 * 128 * 100 / 1e6, rtol=1e-3)  # ellipsoidal: the UTM grid area within 0.1 %
    assert frame["date"].tolist() == ["2016-01-10", "2016-01-11", "2016-01-12", "2016-01-13"]
    assert "failed" in report.table() and "corrupt.tif: SceneReadError" in report.table()
    assert not leftovers(out)


def test_unexpected_errors_are_retried_then_reported(tmp_path, s2_scene, random_bundle, monkeypatch):
    """Not a scene error: Dask retries the task (``retries``); past the retries the scene is failed, batch goes on."""
    import torch
    from distributed import LocalCluster

    import eoseg.batch.worker as batch

    arch = tmp_path / "arch"
    make_archive(arch, s2_scene, 2)
    real = batch.worker_predictor
    calls: dict[str, int] = {}

    def flaky(spec):  # the first two calls (one per scene) fail, later ones load the model
        calls["n"] = calls.get("n", 0) + 1
        if calls["n"] <= 2:
            raise RuntimeError("transient fault")
        return real(spec)

    monkeypatch.setattr(batch, "worker_predictor", flaky)
    kw = dict(settings=FP32, progress=False, torch_threads=torch.get_num_threads())
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        failed = run_batch(arch, random_bundle, tmp_path / "no-retry", retries=0, scheduler=cluster.scheduler_address,
                           **kw)
        assert failed.counts["failed"] == 2 and {r["error_type"] for r in failed.results} == {"RuntimeError"}
        assert all(r["error"] == "transient fault" for r in failed.results)
        calls["n"] = 0
        retried = run_batch(arch, random_bundle, tmp_path / "retry", retries=1, scheduler=cluster.scheduler_address,
                            **kw)
    assert retried.ok and retried.counts["ok"] == 2 and calls["n"] == 4
    assert not leftovers(tmp_path / "retry")
    with pytest.raises(ConfigError, match="--workers"):
        run_batch(arch, random_bundle, tmp_path / "x", workers=2, scheduler="tcp://127.0.0.1:9")


def _eoseg_env() -> dict:
    return os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _stop(proc: subprocess.Popen, group: bool = False) -> None:
    """Stop a process this test started (and, with ``group``, the cluster processes it started itself)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM) if group else proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
            proc.wait(timeout=10)


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_resume_after_an_interrupted_run(tmp_path, s2_scene, random_bundle):
    arch = tmp_path / "arch"
    make_archive(arch, s2_scene, 6)
    out = tmp_path / "out"
    args = [*EOSEG, "batch", str(arch), "--model", str(random_bundle), "--out", str(out), "--workers", "1",
            "--precision", "fp32", "--dashboard-address", "127.0.0.1:0", "-q"]
    proc = subprocess.Popen(args, env=_eoseg_env(), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(list(out.rglob("*.done.json"))) >= 2, 120, "two finished scenes", proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the interruption: client, scheduler and worker at once
        proc.wait(timeout=10)
    finished = sorted(out.rglob("*.done.json"))
    assert 2 <= len(finished) < 6 and not (out / "report.jsonl").exists()
    kept = checksums(p for r in finished for p in r.parent.glob(r.name.removesuffix(".done.json") + "*"))

    report = run_batch(arch, random_bundle, out, settings=FP32, workers=2, resume=True,
                       dashboard_address="127.0.0.1:0", progress=False)
    assert report.ok and report.counts == {"ok": 6 - len(finished), "failed": 0, "skipped": len(finished),
                                           "too_cloudy": 0}
    skipped = {r["record"] for r in report.results if r["status"] == "skipped"}
    assert skipped == {str(p.relative_to(out)) for p in finished}
    assert checksums(kept) == kept  # finished outputs byte-identical, same modification time
    for line in report_lines(out):
        if line["status"] == "ok":
            assert_valid_outputs(out, line)
            assert line["redo_reason"] == "no completion record"
    assert not leftovers(out)


# ---------------------------------------------------------------------------------------------- a real cluster


@pytest.fixture
def dask_cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes (no nanny) on 127.0.0.1; stopped afterwards."""
    dask = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []
    env = _eoseg_env()

    def start(*args):
        procs.append(subprocess.Popen([dask, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        return procs[-1]

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info))
        wait_for(lambda: info.exists() and read_json(info), 60, "the scheduler", procs[0])
        address = read_json(info)["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = {name: start("worker", address, "--name", name, "--nthreads", "1", "--no-nanny", "--host",
                               "127.0.0.1", "--no-dashboard", "--death-timeout", "60")
                   for name in ("a", "b")}
        from distributed import Client

        with Client(address) as client:
            client.wait_for_workers(2, timeout=60)
        yield SimpleNamespace(address=address, workers=workers)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_real_cluster_survives_a_killed_worker(tmp_path, dask_cluster, s2_scene, random_bundle):
    arch = tmp_path / "arch"
    make_archive(arch, s2_scene, 8)
    out = tmp_path / "out"
    args = [*EOSEG, "batch", str(arch), "--model", str(random_bundle), "--out", str(out), "--scheduler",
            dask_cluster.address, "--precision", "fp32", "--summary", str(out / "summary.csv")]
    proc = subprocess.Popen(args, env=_eoseg_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids = {p.pid: name for name, p in dask_cluster.workers.items()}
    try:
        def working_claim():  # a scene a worker is processing right now (claimed, not finished)
            for claim in out.rglob(".*.claim.json"):
                data = read_json(claim)
                if data and data.get("pid") in pids:
                    return claim, data
            return None

        def frozen_mid_scene():  # SIGSTOP a claiming worker; keep it frozen only if it still holds that claim
            found = working_claim()
            if not found:
                return None
            claim, data = found
            victim = dask_cluster.workers[pids[data["pid"]]]
            os.kill(victim.pid, signal.SIGSTOP)
            if (read_json(claim) or {}).get("token") == data["token"]:
                return claim, data, victim
            os.kill(victim.pid, signal.SIGCONT)  # it finished that scene meanwhile: try again
            return None

        wait_for(lambda: list(out.rglob("*.done.json")), 120, "a first finished scene", proc)
        claim, data, victim = wait_for(frozen_mid_scene, 60, "a worker frozen mid-scene", proc)
        victim.kill()  # SIGKILL the frozen worker: it dies holding the claim, the scene half done
        victim.wait(timeout=10)
        output, _ = proc.communicate(timeout=180)
    finally:
        _stop(proc)
    assert proc.returncode == 0, output
    assert "Dask dashboard" in output and "ok" in output
    lines = report_lines(out)
    assert len(lines) == 8 and all(line["status"] == "ok" for line in lines)
    for line in lines:
        assert_valid_outputs(out, line)
    survivor = {line["worker"] for line in lines} - {data["worker"]}
    assert len(survivor) == 1
    redone = [line for line in lines if line["recovered_from"] == data["worker"]]
    assert len(redone) == 1 and redone[0]["worker"] in survivor  # the survivor took over the dead one's claim
    assert claim.name == f".{Path(redone[0]['relpath']).stem}.claim.json"
    assert len((out / "summary.csv").read_text().splitlines()) == 9
    assert not leftovers(out)
