"""eoseg.batch.driver on real Dask clusters with faults: duplicates, concurrent batches, poison scenes, retries,
an interrupted run resumed, a killed worker. Cluster tests bind everything to 127.0.0.1 and stop every process
they start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from batch_helpers import (
    EOSEG,
    FP32,
    assert_valid_outputs,
    checksums,
    crop,
    dead_pid,
    leftovers,
    make_archive,
    poison,
    report_lines,
    spec_for,
)

from eoseg.batch import (
    SceneJob,
    read_json,
    record_mismatch,
    run_batch,
    run_scene,
)
from eoseg.errors import ConfigError
from eoseg.outputs.cog import validate_cog


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
    scenes = make_archive(arch, s2_scene, 6)
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
    lines = report_lines(out)  # merged: each scene's line is the one of the batch that did it
    assert sorted(line["relpath"] for line in lines) == sorted(str(p.relative_to(arch)) for p in scenes)
    assert {line["status"] for line in lines} == {"ok"}
    assert not leftovers(out)


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
