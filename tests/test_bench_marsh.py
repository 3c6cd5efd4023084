"""bench/marsh.py: the southern Virginia marsh points (real evaluation rows of ../shared/data) and their score."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from script_loader import load_script

marsh = load_script("bench_marsh", "bench/marsh.py")


def test_committed_points_lie_in_the_evaluation_rows_with_interpreted_classes():
    points = marsh.read_points()
    assert len(points.rows) == marsh.N_POINTS == len(set(zip(points.rows, points.cols, strict=True)))
    assert (points.rows >= marsh.EVALUATION_ROW).all()
    assert set(points.classes) == {"water", "other", "unsure"}


def test_the_points_are_the_seeded_draw_from_the_real_marsh_mask(shared_data):
    mask = marsh.marsh_mask()
    assert not mask[:marsh.EVALUATION_ROW].any() and mask.sum() > 100_000
    points = marsh.read_points()
    assert mask[points.rows, points.cols].all()
    rows, cols = marsh.draw_points(mask)
    np.testing.assert_array_equal(rows, points.rows)
    np.testing.assert_array_equal(cols, points.cols)
    with rasterio.open(marsh.SCENE) as ds:  # the geometry is the pixel centre in the scene's CRS
        import geopandas as gpd

        table = gpd.read_file(marsh.POINTS, layer=marsh.LAYER)
        assert table.crs == ds.crs
        x, y = ds.transform * (points.cols[0] + 0.5, points.rows[0] + 0.5)
        assert table.geometry.iloc[0].x == pytest.approx(x) and table.geometry.iloc[0].y == pytest.approx(y)


def test_score_counts_marsh_called_water_and_decided_points_right():
    points = marsh.MarshPoints(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]),
                               np.array(["other", "other", "water", "unsure"]))
    classes = np.array([[0, 3], [0, 0]], np.uint8)  # one marsh point called water, the water point right
    mask = np.array([[True, True], [True, False]])
    s = marsh.score(classes, mask, points)
    assert s["mask_water"] == pytest.approx(2 / 3)
    assert (s["marsh_points"], s["marsh_points_water"], s["decided"], s["decided_right"]) == (2, 1, 3, 2)
    low, high = s["marsh_points_water_ci"]
    assert 0 < low < 0.5 < high < 1


def test_wilson_interval():
    assert marsh.wilson(0, 10)[0] == 0.0 and 0.2 < marsh.wilson(0, 10)[1] < 0.35
    low, high = marsh.wilson(5, 10)
    assert low == pytest.approx(1 - high)
    assert marsh.wilson(6, 34) == pytest.approx((0.083, 0.337), abs=0.002)
