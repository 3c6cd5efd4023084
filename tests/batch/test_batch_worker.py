"""eoseg.batch.worker: one scene's run, its record and the skip/overwrite policies; worker sizing."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from batch_helpers import assert_valid_outputs, checksums, crop, leftovers, poison, spec_for

from eoseg.batch import (
    SceneJob,
    gpu_worker_specs,
    read_json,
    record_mismatch,
    run_scene,
    torch_threads_for,
)
from eoseg.predict import PredictSettings


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
