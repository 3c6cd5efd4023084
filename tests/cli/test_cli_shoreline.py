"""The shoreline workflow from the command line: predict --shoreline, transects, timeseries, batch --transects."""

from __future__ import annotations

import shutil

import pandas as pd
import pyogrio
from click.testing import CliRunner

from eoseg.cli import main
from eoseg.outputs.shoreline import read_lines


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_predict_transects_timeseries(s2_scene, tmp_path):
    out = tmp_path / "out"
    result = run("predict", s2_scene, "--out", out, "--precision", "fp32", "--shoreline",
                 "--min-shoreline-length", "1000", "-q")
    assert result.exit_code == 0, result.output
    shoreline = out / "s2_virginia_10m_6band_crop_shoreline.gpkg"
    assert len(read_lines(shoreline)) == 1  # the ocean beach; back-barrier bits are shorter than 1 km
    transects = tmp_path / "transects.geojson"
    made = run("transects", "--shoreline", shoreline, "--spacing", "200", "--length", "300", "--out", transects)
    assert made.exit_code == 0 and "transects (200 m apart" in made.output, made.output
    again = run("transects", "--shoreline", shoreline, "--out", transects)
    assert again.exit_code == 1 and "output exists" in again.output
    tides = tmp_path / "tides.csv"
    tides.write_text("date,level\n2016-01-01T00:00:00Z,0.0\n2016-02-01T00:00:00Z,0.0\n")
    # a scene whose date is not in its name and tags: refused with the fix
    ts = run("timeseries", shoreline, "--transects", transects, "--out", tmp_path / "ts")
    assert ts.exit_code == 2 and "has no acquisition date" in ts.output
    dated = tmp_path / "S2A_20160112_virginia_shoreline.gpkg"
    shutil.copy(shoreline, dated)
    ts = run("timeseries", dated, "--transects", transects, "--out", tmp_path / "ts", "--tides", tides)
    assert ts.exit_code == 2 and "--beach-slope" in ts.output
    ts = run("timeseries", dated, "--transects", transects, "--out", tmp_path / "ts", "--tides", tides,
             "--beach-slope", "0.1")
    assert ts.exit_code == 0, ts.output
    wide = pd.read_csv(tmp_path / "ts" / "shoreline_timeseries.csv")
    assert wide.loc[0, "date"].startswith("2016-01-12") and wide.shape[1] == 2 + len(read_lines(transects))
    # no class raster next to this copy: chainages are those of the crossings, tide level 0 adds nothing
    assert ((wide.iloc[0, 2:].dropna() - 150).abs() < 10).all()


def test_batch_with_transects_writes_the_time_series(s2_scene, tmp_path):
    """Two copies of the same real crop named with two dates: the pipeline end to end; the same image twice
    gives the same chainages, so every trend is 0."""
    arch = tmp_path / "arch"
    arch.mkdir()
    shutil.copy(s2_scene, arch / "S2A_20160112_a.tif")
    shutil.copy(s2_scene, arch / "S2A_20170112_b.tif")
    ref = tmp_path / "ref"
    assert run("predict", s2_scene, "--out", ref, "--precision", "fp32", "--shoreline", "-q",
               "--min-shoreline-length", "1000").exit_code == 0
    transects = tmp_path / "t.gpkg"
    assert run("transects", "--shoreline", ref / "s2_virginia_10m_6band_crop_shoreline.gpkg", "--spacing", "100",
               "--out", transects).exit_code == 0
    out = tmp_path / "out"
    result = run("batch", arch, "--out", out, "--workers", "1", "--precision", "fp32", "--transects", transects,
                 "--dashboard-address", "127.0.0.1:0", "-q")
    assert result.exit_code == 0, result.output
    assert f"shoreline time series: {out / 'shoreline_timeseries.csv'}" in result.output
    assert (out / "S2A_20160112_a_shoreline.gpkg").exists()
    long = pd.read_csv(out / "shoreline_timeseries_long.csv")
    assert list(long.columns[:5]) == ["date", "transect", "chainage", "scene", "cloud_fraction"]
    assert set(long.scene) == {"S2A_20160112_a.tif", "S2A_20170112_b.tif"}
    assert long.chainage.notna().sum() >= len(long) // 2
    trends = pyogrio.read_dataframe(out / "shoreline_trends.gpkg", layer="shoreline_trends")
    assert (trends.trend_m_per_yr.dropna().abs() < 1e-6).all() and trends.trend_m_per_yr.notna().sum() > 5
    assert len(list((out / "plots").glob("*.png"))) == len(trends)


def test_batch_checks_transects_and_tides_before_any_scene(s2_scene, tmp_path):
    import geopandas as gpd
    import shapely

    arch = tmp_path / "arch"
    arch.mkdir()
    shutil.copy(s2_scene, arch / "S2A_20160112_a.tif")
    transects = tmp_path / "t.gpkg"
    gpd.GeoDataFrame({"id": ["a"]}, geometry=[shapely.LineString([(0, 0), (0, 100)])], crs="EPSG:32618").to_file(
        transects)
    tides = tmp_path / "tides.csv"
    tides.write_text("date,level\n2016-01-01T00:00:00Z,0.0\n")
    base = ("batch", arch, "--out", tmp_path / "out", "--workers", "1", "--dashboard-address", "127.0.0.1:0")
    no_slope = run(*base, "--transects", transects, "--tides", tides)
    assert no_slope.exit_code == 2 and "--beach-slope" in no_slope.output
    missing = run(*base, "--transects", tmp_path / "nope.gpkg")
    assert missing.exit_code == 2 and "nope.gpkg: does not exist" in missing.output
    assert not (tmp_path / "out" / "S2A_20160112_a_classes.tif").exists()
