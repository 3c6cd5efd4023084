"""eoseg.batch.claims: exclusive claims, stale ones broken, a retry replacing its own partial outputs."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import psutil
from batch_helpers import assert_valid_outputs, crop, dead_pid, leftovers, spec_for

from eoseg.batch import (
    SceneJob,
    read_json,
    run_scene,
)
from eoseg.batch.claims import try_claim


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

    third = try_claim(job, spec, None)  # this process's pid, so live ...
    before = psutil.Process().create_time() - 60
    os.utime(third.path, (before, before))  # ... but written before it started: a reused pid, the holder gone
    fourth = try_claim(job, spec, None)
    assert fourth is not None and not third.held()
    fourth.release()

    elsewhere = {"batch": "b", "token": "t", "host": "another-host", "pid": dead_pid()}
    second.path.write_text(json.dumps(elsewhere))  # another host's pid cannot be checked: live for an hour
    assert try_claim(job, spec, None) is None
    old = time.time() - 2 * 3600
    os.utime(second.path, (old, old))
    assert try_claim(job, spec, None) is not None


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
