"""Shoreline time series: wide and long tables, tide correction, trends, plots; a real predicted shoreline."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from geopandas import GeoDataFrame

from eoseg.errors import ConfigError
from eoseg.outputs.vectors import read_styles
from eoseg.timeseries import (
    LONG_NAME,
    TRENDS_NAME,
    WIDE_NAME,
    SceneShoreline,
    read_tides,
    scene_shoreline_from_file,
    shoreline_timeseries,
    write_timeseries,
)
from eoseg.transects import make_transects

UTM = "EPSG:32618"
X0, Y0 = 500000.0, 4100000.0
DATES = [dt.datetime(2018, 1, 1, 15, tzinfo=dt.UTC), dt.datetime(2019, 1, 1, 15, tzinfo=dt.UTC),
         dt.datetime(2020, 1, 1, 15, tzinfo=dt.UTC), dt.datetime(2021, 1, 1, 15, tzinfo=dt.UTC)]


@pytest.fixture()
def archive(tmp_path):
    """Four dated shorelines moving seaward (south) by 3 m a year; transects every 100 m from the first."""
    scenes = []
    for i, when in enumerate(DATES):
        y = Y0 - 3.0 * (when - DATES[0]).total_seconds() / (365.25 * 86400)
        frame = GeoDataFrame({"date": [when.isoformat()]},
                             geometry=[shapely.LineString([(X0, y), (X0 + 1000, y)])], crs=UTM)
        path = tmp_path / f"scene{i}_shoreline.gpkg"
        pyogrio.write_dataframe(frame, path, layer=f"scene{i}")
        scenes.append(path)
    transects = make_transects(pyogrio.read_dataframe(scenes[0]), spacing=100, length=300)
    return scenes, transects


def test_timeseries_tables_trends_and_plots(archive, tmp_path):
    paths, transects = archive
    scenes = [scene_shoreline_from_file(p) for p in paths]
    assert scenes[1].date.date() == dt.date(2019, 1, 1) and scenes[1].classes is None
    long = shoreline_timeseries(scenes, transects)
    assert list(long.columns[:5]) == ["date", "transect", "chainage", "scene", "cloud_fraction"]
    assert len(long) == 4 * len(transects)
    first = long[long.transect == "T0001"].chainage.to_numpy()
    assert first == pytest.approx(150 + 3.0 * np.array([0, 365, 730, 1096]) / 365.25, abs=1e-6)
    out = write_timeseries(tmp_path / "ts", long, transects)
    wide = pd.read_csv(out["timeseries"])
    assert list(wide.columns) == ["date", "scene", *transects["id"]]
    assert len(wide) == 4 and wide["T0003"].iloc[-1] == pytest.approx(150 + 3.0 * 1096 / 365.25, abs=1e-3)
    assert pd.read_csv(out["timeseries_long"]).shape[0] == len(long)
    trends = pyogrio.read_dataframe(out["trends"], layer="shoreline_trends")
    assert trends["trend_m_per_yr"].to_numpy() == pytest.approx(3.0, abs=1e-6)
    assert (trends["n"] == 4).all()
    assert "graduatedSymbol" in read_styles(out["trends"])[0]["styleQML"]
    pngs = sorted(p.name for p in out["plots"].iterdir())
    assert pngs == [f"{t}.png" for t in transects["id"]]
    assert {p.name for p in (tmp_path / "ts").iterdir()} == {WIDE_NAME, LONG_NAME, TRENDS_NAME, "plots"}


def test_tide_correction_shifts_by_level_over_slope(archive, tmp_path):
    paths, transects = archive
    scenes = [scene_shoreline_from_file(p) for p in paths]
    tides_csv = tmp_path / "tides.csv"
    # levels at 12:00 and 18:00 each scene day: 15:00 interpolates to the mean
    rows = [f"{d.date()}T12:00:00Z,{0.2 * i}\n{d.date()}T18:00:00Z,{0.2 * i + 0.4}" for i, d in enumerate(DATES)]
    tides_csv.write_text("date,level\n" + "\n".join(rows) + "\n")
    tides = read_tides(tides_csv)
    long = shoreline_timeseries(scenes, transects, tides=tides, beach_slope=0.1, reference_level=0.1)
    sub = long[long.transect == "T0002"]
    levels = 0.2 * np.arange(4) + 0.2
    assert sub.tide_level.to_numpy() == pytest.approx(levels)
    assert (sub.chainage - sub.chainage_uncorrected).to_numpy() == pytest.approx((levels - 0.1) / 0.1)
    with pytest.raises(ConfigError, match="beach slope"):
        shoreline_timeseries(scenes, transects, tides=tides)
    late = [SceneShoreline("late", dt.datetime(2030, 1, 1, tzinfo=dt.UTC), paths[0])]
    with pytest.raises(ConfigError, match="does not cover"):
        shoreline_timeseries(late, transects, tides=tides, beach_slope=0.1)


def test_real_predicted_shoreline_on_its_own_transects(s2_scene, tmp_path):
    """Virginia crop: transects made from the predicted shoreline cross it at half their length."""
    from eoseg.outputs.shoreline import read_lines
    from eoseg.predict import Predictor, PredictSettings

    result = Predictor("resunet", PredictSettings(device="cpu", precision="fp32", shoreline=True,
                                                  min_shoreline_length=1000)).predict(s2_scene, tmp_path,
                                                                                      progress=False)
    line = read_lines(result.outputs["shoreline"])
    transects = make_transects(line, spacing=100, length=300)
    scene = SceneShoreline("s2", dt.datetime(2016, 1, 12, tzinfo=dt.UTC), result.outputs["shoreline"],
                           result.outputs["classes"])
    long = shoreline_timeseries([scene], transects)
    assert len(transects) >= 20
    assert long.chainage.notna().mean() > 0.8  # transects at the crop's ends run off the scene: empty
    assert long.chainage.dropna().to_numpy() == pytest.approx(150.0, abs=10.0)
    assert (long.loc[long.chainage.isna(), "cloud_fraction"] > 0).all()
