"""`eoseg batch`: options, exit codes (0 all ok, 1 a scene failed, 2 usage), the summary table."""

from __future__ import annotations

import json
import shutil

import dask
import distributed  # noqa: F401 - its config defaults must exist before dask.config.set below
from click.testing import CliRunner

from eoseg.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("eoseg: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_help_lists_engine_and_predict_options():
    result = run("batch", "--help")
    assert result.exit_code == 0
    for option in ("--scheduler", "--workers", "--threads-per-worker", "--resume", "--retries", "--summary",
                   "--torch-threads", "--tile-size", "--tta", "--probabilities", "--bands", "--overwrite",
                   "--allow-ungeoreferenced"):
        assert option in result.output, option
    assert "batch" in run("--help").output


def test_usage_errors_exit_2_with_one_line(tmp_path, random_bundle):
    (tmp_path / "empty").mkdir()
    empty = run("batch", tmp_path / "empty", "--model", random_bundle, "--out", tmp_path / "out")
    assert empty.exit_code == 2 and "no scenes found" in error_line(empty)
    missing = run("batch", tmp_path / "nowhere", "--model", random_bundle, "--out", tmp_path / "out")
    assert missing.exit_code == 2 and "does not exist" in error_line(missing)
    scene = tmp_path / "a.tif"
    scene.write_bytes(b"x")
    summary = run("batch", scene, "--model", random_bundle, "--out", tmp_path / "out", "--summary", tmp_path / "s.xls")
    assert summary.exit_code == 2 and ".csv or .gpkg" in error_line(summary)
    workers = run("batch", scene, "--model", random_bundle, "--out", tmp_path / "out", "--workers", "0")
    assert workers.exit_code == 2 and "--workers must be at least 1" in error_line(workers)
    model = run("batch", scene, "--model", tmp_path / "no-bundle", "--out", tmp_path / "out")
    assert model.exit_code == 2 and "no model bundle" in error_line(model)


def test_unreachable_scheduler_is_a_usage_error(tmp_path, s2_scene, random_bundle):
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = run("batch", s2_scene, "--model", random_bundle, "--out", tmp_path, "--scheduler",
                     "tcp://127.0.0.1:9")
    assert result.exit_code == 2
    assert "cannot connect to the Dask scheduler" in error_line(result) and "dask scheduler" in result.output


def test_a_failed_scene_gives_exit_1_and_a_table(tmp_path, s2_scene, random_bundle):
    arch = tmp_path / "arch"
    arch.mkdir()
    shutil.copy(s2_scene, arch / "S2A_20160112_good.tif")
    (arch / "S2A_20160113_bad.tif").write_bytes(s2_scene.read_bytes()[:20000])
    out = tmp_path / "out"
    result = run("batch", arch, "--model", random_bundle, "--out", out, "--workers", "2", "--precision", "fp32",
                 "--dashboard-address", "127.0.0.1:0", "--summary", out / "areas.csv")
    assert result.exit_code == 1, result.output
    assert "Dask dashboard" in result.output
    assert "S2A_20160113_bad.tif: SceneReadError" in result.output
    assert f"report: {out / 'report.jsonl'}" in result.output
    statuses = [json.loads(line)["status"] for line in (out / "report.jsonl").read_text().splitlines()]
    assert statuses == ["ok", "failed"]  # input order
    assert (out / "areas.csv").read_text().splitlines()[1].startswith("S2A_20160112_good.tif,2016-01-12,")

    again = run("batch", arch / "S2A_20160112_good.tif", "--model", random_bundle, "--out", out, "--workers", "1",
                "--precision", "fp32", "--dashboard-address", "127.0.0.1:0", "--resume", "-q")
    assert again.exit_code == 0, again.output
    assert "skipped       1" in again.output and "Dask dashboard" not in again.output
