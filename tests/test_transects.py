"""Transects from a reference shoreline, and chainages checked against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from geopandas import GeoDataFrame

from eoseg.errors import ConfigError
from eoseg.transects import chainages, make_transects, read_transects, write_transects

UTM = "EPSG:32618"
X0, Y0 = 500000.0, 4100000.0


def frame(geoms, crs=UTM, **columns) -> GeoDataFrame:
    return GeoDataFrame(columns, geometry=list(geoms), crs=crs)


def test_transects_are_normal_spaced_and_start_on_the_land_side():
    # a shoreline running east with water on its right (south): land is north
    ref = frame([shapely.LineString([(X0, Y0), (X0 + 1000, Y0)])])
    t = make_transects(ref, spacing=50, length=300)
    assert list(t["id"][:3]) == ["T0001", "T0002", "T0003"]
    assert len(t) == 21  # 0, 50, ..., 1000 m
    xy = np.array([shapely.get_coordinates(g) for g in t.geometry])  # (n, 2 points, 2)
    assert np.allclose(xy[:, 0, 1], Y0 + 150) and np.allclose(xy[:, 1, 1], Y0 - 150)  # origin north, on land
    assert np.allclose(np.diff(xy[:, 0, 0]), 50)
    flipped = make_transects(ref, spacing=50, length=300, flip=True)
    assert np.allclose(shapely.get_coordinates(flipped.geometry.iloc[0])[0], [X0, Y0 - 150])


def test_transects_on_a_curve_are_normal_to_it_and_in_the_input_crs():
    centre, radius = np.array([X0, Y0]), 2000.0
    angles = np.linspace(np.pi / 2, 0, 200)  # a clockwise quarter circle: its left (land) is outside it
    arc = shapely.LineString(centre + radius * np.column_stack([np.cos(angles), np.sin(angles)]))
    ref = frame([arc]).to_crs("EPSG:4326")  # any CRS: transects come back in it
    t = make_transects(ref, spacing=100, length=200)
    assert t.crs.to_epsg() == 4326
    for g in t.to_crs(UTM).geometry:
        (ox, oy), (ex, ey) = shapely.get_coordinates(g)
        radial = np.hypot(ox - X0, oy - Y0) - np.hypot(ex - X0, ey - Y0)
        assert radial == pytest.approx(200, abs=0.5)  # normal to the arc, the origin outside it (the left side)
        assert 0.5 * (np.hypot(ox - X0, oy - Y0) + np.hypot(ex - X0, ey - Y0)) == pytest.approx(radius, abs=0.5)


def test_chainages_match_hand_computed_values(tmp_path):
    transects = frame([shapely.LineString([(X0 + 100, Y0 + 150), (X0 + 100, Y0 - 150)]),  # straight crossing
                       shapely.LineString([(X0 + 300, Y0 + 150), (X0 + 300, Y0 - 150)]),  # three crossings
                       shapely.LineString([(X0 + 900, Y0 + 150), (X0 + 900, Y0 - 150)])],  # no crossing
                      id=["a", "b", "c"])
    # the shoreline at y = Y0 + 20 (chainage 130) for x ≤ 250; a zigzag across transect b crossing at
    # y = Y0 + 50, Y0 + 10, Y0 - 50 (chainages 100, 140, 200: median 140); it ends at x = 400
    shoreline = frame([shapely.LineString([(X0, Y0 + 20), (X0 + 250, Y0 + 20)]),
                       shapely.LineString([(X0 + 250, Y0 + 50), (X0 + 350, Y0 + 50), (X0 + 350, Y0 + 10),
                                           (X0 + 250, Y0 + 10), (X0 + 250, Y0 - 50), (X0 + 400, Y0 - 50)])])
    table = chainages(transects, shoreline).set_index("transect")
    assert table.loc["a", "chainage"] == pytest.approx(130.0)
    assert table.loc["b", "chainage"] == pytest.approx(140.0) and table.loc["b", "crossings"] == 3
    assert table.loc["b", "spread"] == pytest.approx(100.0) and table.loc["a", "spread"] == 0
    assert np.isnan(table.loc["c", "chainage"]) and table.loc["c", "crossings"] == 0
    # a transect with its origin given in another CRS measures the same
    table_ll = chainages(transects.to_crs("EPSG:4326"), shoreline).set_index("transect")
    assert table_ll.loc["a", "chainage"] == pytest.approx(130.0, abs=0.01)


def test_chainage_is_empty_where_the_transect_crosses_nodata(tmp_path):
    transects = frame([shapely.LineString([(X0 + 105, Y0 + 150), (X0 + 105, Y0 - 150)]),
                       shapely.LineString([(X0 + 505, Y0 + 150), (X0 + 505, Y0 - 150)])], id=["clear", "cloud"])
    shoreline = frame([shapely.LineString([(X0, Y0), (X0 + 1000, Y0)])])
    classes = np.zeros((40, 100), np.uint8)
    classes[5:12, 45:55] = 255  # a cloud over the second transect, landward of its crossing
    path = tmp_path / "x_classes.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100, height=40, count=1, dtype="uint8", crs=UTM,
                       transform=Affine(10, 0, X0, 0, -10, Y0 + 200), nodata=255) as ds:
        ds.write(classes, 1)
    table = chainages(transects, shoreline, path).set_index("transect")
    assert table.loc["clear", "chainage"] == pytest.approx(150.0) and table.loc["clear", "cloud_fraction"] == 0
    assert np.isnan(table.loc["cloud", "chainage"]) and 0.1 < table.loc["cloud", "cloud_fraction"] < 0.3
    assert table.loc["cloud", "crossings"] == 1


def test_transects_round_trip_and_bad_files(tmp_path):
    t = make_transects(frame([shapely.LineString([(X0, Y0), (X0 + 200, Y0)])]), spacing=50, length=100)
    for name in ("t.gpkg", "t.geojson"):
        back = read_transects(write_transects(t, tmp_path / name))
        assert list(back["id"]) == list(t["id"]) and back.crs.to_epsg() == 32618
    write_transects(frame([shapely.Point(X0, Y0)], id=["p"]), tmp_path / "p.gpkg")
    with pytest.raises(ConfigError, match="not a line"):
        read_transects(tmp_path / "p.gpkg")
    with pytest.raises(ConfigError, match="spacing"):
        make_transects(frame([shapely.LineString([(X0, Y0), (X0 + 20, Y0)])]), spacing=50, length=100)
