"""Process-wide tuning is opt-in: the CLI applies it, library calls (Predictor) never do."""

from __future__ import annotations

import ctypes

import pytest

import eoseg.predict as predict_mod
import eoseg.process as process
from eoseg.predict import Predictor, PredictSettings
from eoseg.process import gdal_cache_max, set_gdal_cache_max, tune_process

SENTINEL = 97 * 2**20


@pytest.fixture
def gdal_cache():
    """GDAL's cache set to a recognisable size for the test, restored after."""
    before = gdal_cache_max()
    set_gdal_cache_max(SENTINEL)
    yield SENTINEL
    set_gdal_cache_max(before)


@pytest.fixture
def mallopt_calls(monkeypatch):
    """Every libc.mallopt call made in the test (none reaches the real libc)."""
    calls: list[tuple] = []

    class FakeLibc:
        def mallopt(self, *args):
            calls.append(args)
            return 1

    real = ctypes.CDLL

    def cdll(name, *args, **kwargs):
        return FakeLibc() if "libc" in str(name) else real(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    return calls


def test_predictor_leaves_malloc_and_the_gdal_cache_alone(s2_scene, random_bundle, tmp_path, gdal_cache,
                                                          mallopt_calls, monkeypatch):
    seen = []
    real_run_tiles = predict_mod.run_tiles

    def run_tiles(*args, **kwargs):
        seen.append(gdal_cache_max())  # while the scene is read
        return real_run_tiles(*args, **kwargs)

    monkeypatch.setattr(predict_mod, "run_tiles", run_tiles)
    predictor = Predictor(random_bundle, PredictSettings(device="cpu", precision="fp32"))
    predictor.predict(s2_scene, tmp_path)
    assert mallopt_calls == []
    assert seen == [gdal_cache] and gdal_cache_max() == gdal_cache


def test_tune_process_sizes_the_cache_for_the_widest_scene(s2_scene, collar_scene, gdal_cache, mallopt_calls):
    done = tune_process([s2_scene, collar_scene], cpu=False)
    expected = max(process.block_rows_cache_bytes(s2_scene), process.block_rows_cache_bytes(collar_scene))
    assert done == {"gdal_cache_bytes": expected, "keep_freed_memory_mapped": False}
    assert gdal_cache_max() == expected and mallopt_calls == []
    done = tune_process(cpu=True)
    assert gdal_cache_max() == process.DEFAULT_GDAL_CACHE
    assert done["keep_freed_memory_mapped"] == bool(mallopt_calls)
    assert len(mallopt_calls) == (3 if done["keep_freed_memory_mapped"] else 0)
    if done["keep_freed_memory_mapped"]:
        assert (-8, 1) in mallopt_calls  # M_ARENA_MAX 1: the pipeline's threads share one malloc arena


def test_block_rows_cache_bytes(s2_scene, tmp_path):
    import rasterio

    with rasterio.open(s2_scene) as ds:
        need = 2 * ds.block_shapes[0][0] * ds.width * ds.count * 2
    assert process.block_rows_cache_bytes(s2_scene) == max(process.MIN_GDAL_CACHE, need + 16 * 2**20)
    assert process.block_rows_cache_bytes(tmp_path / "missing.tif") == process.MIN_GDAL_CACHE


def test_the_predict_command_tunes_its_own_process(s2_scene, random_bundle, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from eoseg.cli import main

    calls = []
    monkeypatch.setattr(process, "tune_process", lambda scenes, cpu: calls.append((list(scenes), cpu)))
    result = CliRunner().invoke(main, ["predict", str(s2_scene), "--model", str(random_bundle), "--out",
                                       str(tmp_path), "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert calls == [([s2_scene], True)]
