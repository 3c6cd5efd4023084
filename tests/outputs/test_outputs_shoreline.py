"""Shoreline tracing: sub-pixel accuracy on synthetic shorelines, strip joins, filters, and the GeoPackage."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from eoseg.classes import COASTAL
from eoseg.outputs.shoreline import (
    Piece,
    ShorelineInfo,
    ShorelineWriter,
    join_at_row,
    trace_shoreline,
)
from eoseg.outputs.vectors import read_styles

DATA = Path(__file__).resolve().parents[1] / "data"
UTM = CRS.from_epsg(32618)
WATER, SAND, OTHER, NODATA = 0, 2, 3, 255


def synthetic(kind: str, pixel_m: float, shape=(120, 100), factor=8, blur=0.7):
    """A scene with a known shoreline: water fraction of each pixel from a fine grid (``factor``² samples),
    blurred (a sensor's point-spread), sand within 5 px on the land side, other beyond.

    Returns classes, the water probability, the transform and the signed distance (pixels) to the truth.
    """
    h, w = shape
    if kind == "straight":
        n, c = np.array([np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))]), 47.3

        def dist(x, y):
            return x * n[0] + y * n[1] - c
    else:
        cx, cy, radius = -60.0, 60.0, 110.3

        def dist(x, y):
            return np.hypot(x - cx, y - cy) - radius
    yy, xx = np.mgrid[0:h * factor, 0:w * factor]
    fine = dist((xx + 0.5) / factor, (yy + 0.5) / factor) > 0
    prob = ndimage.gaussian_filter(fine.reshape(h, factor, w, factor).mean(axis=(1, 3)), blur).astype(np.float32)
    centre = dist(np.arange(w)[None, :] + 0.5, np.arange(h)[:, None] + 0.5)
    classes = np.where(prob > 0.5, WATER, np.where(centre > -5, SAND, OTHER)).astype(np.uint8)
    return classes, prob, Affine(pixel_m, 0, 500000, 0, -pixel_m, 4100000), dist


def errors_px(frame, transform, dist) -> np.ndarray:
    xy = shapely.get_coordinates(frame.geometry.values)
    col, row = ~transform * (xy[:, 0], xy[:, 1])
    return dist(np.asarray(col), np.asarray(row))


@pytest.mark.parametrize("kind", ["straight", "curved"])
@pytest.mark.parametrize("pixel_m", [10.0, 30.0])
def test_traced_shoreline_within_0_3_px_rms_of_truth(kind, pixel_m):
    classes, prob, transform, dist = synthetic(kind, pixel_m)
    frame = trace_shoreline(classes, prob, transform, UTM, COASTAL)
    assert len(frame) == 1
    err = errors_px(frame, transform, dist)
    assert np.sqrt(np.mean(err ** 2)) < 0.3
    # the line crosses the whole scene: its length is that of the truth inside it (within 2 pixels)
    assert frame.length_m.iloc[0] > 100 * pixel_m


def test_argmax_boundary_is_not_sub_pixel():
    """Against a baseline that would pass by accident: the pixel-edge boundary of the class map is ~0.3-0.5 px
    off, so the 0.3 px bound tests sub-pixel tracing."""
    classes, prob, transform, dist = synthetic("straight", 10.0)
    frame = trace_shoreline(classes, (classes == WATER).astype(np.float32), transform, UTM, COASTAL)
    err = errors_px(frame, transform, dist)
    assert np.sqrt(np.mean(err ** 2)) > 0.3 * 0.5  # steps of a binary field: far coarser than the contour's
    assert np.sqrt(np.mean(err ** 2)) > np.sqrt(np.mean(errors_px(
        trace_shoreline(classes, prob, transform, UTM, COASTAL), transform, dist) ** 2)) * 3


@pytest.mark.parametrize(("strip_rows", "trace_rows"), [(1, 64), (2, 64), (3, 64), (7, 64), (33, 64), (61, 64),
                                                       (64, 64), (120, 2), (120, 5), (50, 17)])
def test_strip_joined_lines_equal_one_pass(strip_rows, trace_rows):
    classes, prob, transform, _ = synthetic("curved", 10.0)
    # a wiggly field: many lines crossing strip boundaries back and forth, and closed rings
    yy, xx = np.mgrid[0:classes.shape[0], 0:classes.shape[1]]
    prob = (0.5 + 0.3 * np.sin(xx / 4.3) * np.cos(yy / 5.1) + 0.2 * (prob - 0.5)).astype(np.float32)
    classes = np.where(prob > 0.5, WATER, SAND).astype(np.uint8)
    classes[40:46, 10:30] = NODATA
    one = trace_shoreline(classes, prob, transform, UTM, COASTAL, trace_rows=10**9)  # one contourpy call
    strips = trace_shoreline(classes, prob, transform, UTM, COASTAL, strip_rows=strip_rows, trace_rows=trace_rows)
    assert len(one) > 20
    assert len(strips) == len(one)
    assert strips.length_m.sum() == pytest.approx(one.length_m.sum(), rel=1e-12)
    for g1 in one.geometry:
        g2 = min(strips.geometry, key=lambda g: shapely.hausdorff_distance(g1, g))
        assert shapely.hausdorff_distance(g1, g2) < 1e-6
        assert len(shapely.get_coordinates(g1)) == len(shapely.get_coordinates(g2))
        assert g1.is_closed == g2.is_closed


def test_join_at_row_joins_pieces_meeting_on_the_row_and_closes_rings():
    up = Piece(np.array([[0.0, 5.0], [1.0, 4.0], [2.0, 5.0]]), np.ones(3, bool), 1.0)  # a cap above row 5
    down = Piece(np.array([[2.0, 5.0], [1.0, 6.0], [0.0, 5.0]]), np.ones(3, bool), 1.0)  # a cup below it
    other = Piece(np.array([[7.5, 5.0], [7.5, 8.0]]), np.ones(2, bool), 0.0)
    tail = Piece(np.array([[7.5, 2.0], [7.5, 5.0]]), np.ones(2, bool), 0.0)
    joined = join_at_row([up, down, other, tail], 5)
    assert len(joined) == 2
    ring = next(p for p in joined if len(p.coords) == 5)
    assert (ring.coords[0] == ring.coords[-1]).all()
    line = next(p for p in joined if len(p.coords) == 3)
    assert sorted(line.coords[:, 1]) == [2.0, 5.0, 8.0]


def test_water_lies_on_the_right_of_each_line():
    for kind in ("straight", "curved"):
        classes, prob, transform, dist = synthetic(kind, 10.0)
        for flip in (False, True):
            c, p, t = classes, prob, transform
            if flip:  # a south-up raster: the pixel frame's handedness flips
                c, p, t = classes[::-1], prob[::-1], transform * Affine(1, 0, 0, 0, -1, classes.shape[0])
            line = trace_shoreline(c, p, t, UTM, COASTAL).geometry.iloc[0]
            xy = shapely.get_coordinates(line)
            mid = len(xy) // 2
            d = xy[mid + 1] - xy[mid]
            right = (xy[mid] + xy[mid + 1]) / 2 + 3 * 10.0 * np.array([d[1], -d[0]]) / np.hypot(*d)
            col, row = ~t * tuple(right)
            assert p[int(row), int(col)] > 0.9


def test_lines_away_from_sand_and_short_lines_are_dropped():
    classes, prob, transform, _ = synthetic("straight", 10.0)
    no_sand = np.where(classes == SAND, OTHER, classes)
    assert len(trace_shoreline(no_sand, prob, transform, UTM, COASTAL)) == 0  # a river bank in a field
    half = classes.copy()
    half[60:][half[60:] == SAND] = OTHER  # sand only along the top half
    frame = trace_shoreline(half, prob, transform, UTM, COASTAL)
    full = trace_shoreline(classes, prob, transform, UTM, COASTAL)
    assert 0.3 < frame.length_m.sum() / full.length_m.sum() < 0.75
    assert len(trace_shoreline(classes, prob, transform, UTM, COASTAL,
                               min_length_m=full.length_m.sum() + 1)) == 0


def test_no_line_runs_along_or_into_nodata():
    classes, prob, transform, _ = synthetic("straight", 10.0)
    classes[:, 50:] = NODATA  # a cloud mask over the right half
    prob[:, 50:] = 0.0  # what the accumulator gives nodata: "not water", a false edge along the mask
    frame = trace_shoreline(classes, prob, transform, UTM, COASTAL)
    xy = shapely.get_coordinates(frame.geometry.values)
    col, _ = ~transform * (xy[:, 0], xy[:, 1])
    assert len(frame) >= 1
    assert np.max(col) <= 50 - 0.5  # pixel-centre coordinate 49 at most: nothing in or along the mask


def test_writer_writes_styled_geopackage_with_attributes(tmp_path):
    classes, prob, transform, _ = synthetic("curved", 10.0)
    path = tmp_path / "scene_shoreline.gpkg"
    info = ShorelineInfo(scene="scene", date="2016-01-12", sensor="sentinel2", method="prob")
    with ShorelineWriter(path, classes.shape, transform, UTM, COASTAL, info, min_length_m=50) as out:
        for r0 in range(0, classes.shape[0], 16):
            out.write_rows(classes[r0:r0 + 16], prob[r0:r0 + 16])
    frame = pyogrio.read_dataframe(path, layer="scene")
    assert list(frame.columns) == ["scene", "date", "sensor", "method", "level", "length_m", "geometry"]
    assert frame.crs.to_epsg() == 32618
    assert (frame.geom_type == "LineString").all()
    assert frame.loc[0, "scene"] == "scene" and frame.loc[0, "date"] == "2016-01-12"
    assert frame.length_m.iloc[0] == pytest.approx(frame.geometry.length.iloc[0], rel=2e-3)  # UTM scale factor
    styles = read_styles(path)
    assert styles[0]["f_table_name"] == "scene_shoreline".removesuffix("_shoreline")
    assert "SimpleLine" in styles[0]["styleQML"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_writer_leaves_nothing_on_error(tmp_path):
    classes, prob, transform, _ = synthetic("straight", 10.0)
    path = tmp_path / "x_shoreline.gpkg"
    with pytest.raises(RuntimeError), ShorelineWriter(path, classes.shape, transform, UTM, COASTAL,
                                                      ShorelineInfo("x")) as out:
        out.write_rows(classes[:50], prob[:50])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_real_scene_shoreline_follows_the_ocean_beach():
    """Virginia crop: classes and a water field from the reflectances (NDWI), the ocean beach runs north–south
    along the east side of the barrier island; the traced line is long and lies between the beach and the sea."""
    with rasterio.open(DATA / "s2_virginia_10m_6band_crop.tif") as ds:
        blue, green, _, nir, swir1, _ = ds.read().astype("float32")
        transform, crs = ds.transform, ds.crs
    mndwi = (green - swir1) / np.maximum(green + swir1, 1)
    classes = np.full(blue.shape, OTHER, np.uint8)
    classes[mndwi > 0] = WATER
    classes[(classes == OTHER) & (swir1 > 2000) & (blue > 1200)] = SAND
    field = np.clip(mndwi + 0.5, 0, 1).astype(np.float32)  # 0.5 contour = MNDWI 0
    frame = trace_shoreline(classes, field, transform, crs, COASTAL, min_length_m=200, strip_rows=40)
    assert frame.length_m.sum() > 1000
    xy = shapely.get_coordinates(frame.geometry.values)
    col, row = ~transform * (xy[:, 0], xy[:, 1])
    ci, ri = np.clip(np.rint(np.asarray(col)).astype(int), 0, 319), np.clip(np.rint(np.asarray(row)).astype(int),
                                                                           0, 255)
    near = ndimage.binary_dilation(classes == SAND, iterations=4)
    assert near[ri, ci].mean() > 0.95


def test_shoreline_quicklook_draws_the_line_over_the_scene(tmp_path):
    from PIL import Image

    from eoseg.outputs.quicklook import write_shoreline_quicklook

    scene = DATA / "s2_virginia_10m_6band_crop.tif"
    with rasterio.open(scene) as ds:
        t = ds.transform
    x0, y0 = t * (100, 10)
    x1, y1 = t * (100, 250)
    path = tmp_path / "s_shoreline.gpkg"
    line = shapely.LineString([(x0, y0), (x1, y1)])
    pyogrio.write_dataframe(gpd.GeoDataFrame({"length_m": [2400.0]}, geometry=[line], crs=UTM), path, layer="s")
    png = write_shoreline_quicklook(scene, path, tmp_path / "q.png")
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (np.abs(rgb - [228, 26, 28]).sum(axis=2) < 60)
    cols = np.flatnonzero(red.any(axis=0))
    assert red.sum() > 200 and np.ptp(cols) < 10  # one vertical line
