"""eoseg.outputs.areas: one ellipsoidal area rule for polygons, pixels and the batch summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from eoseg.batch.summary import class_areas_km2
from eoseg.classes import COASTAL
from eoseg.outputs.areas import area_block, block_pixel_areas, masked_area, pixel_area
from eoseg.outputs.vectors import polygonize

WGS84_A = 6378137.0
IDS = {c.name: c.id for c in COASTAL.classes}


def mercator_north(lat: float) -> float:
    """EPSG:3857 northing of latitude ``lat`` (spherical Mercator on the WGS84 semi-major axis)."""
    return WGS84_A * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def test_a_web_mercator_pixel_at_60n_is_a_quarter_of_its_grid_area():
    transform = Affine(10, 0, 1e6, 0, -10, mercator_north(60.0) + 5)  # a 10 m pixel centred on 60° N
    mercator = CRS.from_epsg(3857)
    # 100 m² of grid; on the ground 100 · cos²(60°) = 25 m² (WGS84 ellipsoid vs sphere: within 0.5 %)
    assert pixel_area(transform, mercator, (1, 1)) == pytest.approx(25.0, rel=5e-3)
    assert block_pixel_areas(transform, mercator, (1, 1))[0, 0] == pytest.approx(25.0, rel=5e-3)
    assert block_pixel_areas(transform, None, (1, 1)) is None


def test_blocks_tile_the_scene_and_masked_area_counts_pixels():
    transform, crs = Affine(30, 0, 4e5, 0, -30, 4.5e6), CRS.from_epsg(32618)
    assert area_block(transform, crs, (40, 50)) == 16  # 16 × 30 m = 480 m ≤ 500 m
    blocks = block_pixel_areas(transform, crs, (40, 50), block=16)
    assert blocks.shape == (3, 4)
    mask = np.ones((40, 50), bool)
    whole = masked_area(mask, blocks, 0, 16)
    assert whole == pytest.approx(pixel_area(transform, crs, (40, 50)) * 2000, rel=1e-4)
    assert masked_area(mask[16:], blocks, 16, 16) + masked_area(mask[:16], blocks, 0, 16) == pytest.approx(whole)
    with pytest.raises(ValueError, match="block row"):
        masked_area(mask[5:], blocks, 5, 16)


def classes_of(scene) -> tuple[np.ndarray, Affine, CRS]:
    """Four classes from the quartiles of the real crop's NIR band, nodata where the scene has none."""
    with rasterio.open(scene) as ds:
        nir = ds.read(4).astype(float)
        valid = ds.read_masks(4) > 0
        transform, crs = ds.transform, ds.crs
    classes = np.digitize(nir, np.quantile(nir[valid], [0.25, 0.5, 0.75])).astype(np.uint8)
    classes[~valid] = COASTAL.nodata
    return classes, transform, crs


def write_classes(path, classes: np.ndarray, transform: Affine, crs: CRS):
    with rasterio.open(path, "w", driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform, nodata=COASTAL.nodata) as ds:
        ds.write(classes, 1)
    return path


@pytest.mark.parametrize("where", ["own CRS (UTM)", "Web Mercator at 60° N"])
def test_batch_summary_equals_the_sum_of_polygon_areas(tmp_path, s2_scene, where):
    classes, transform, crs = classes_of(s2_scene)
    if where.startswith("Web"):  # the same pixels, placed where the grid area is 4 × the true one
        transform, crs = Affine(10, 0, 1e6, 0, -10, mercator_north(60.0)), CRS.from_epsg(3857)
    polygons = polygonize(classes, transform, crs, COASTAL)
    summary = class_areas_km2(write_classes(tmp_path / "c.tif", classes, transform, crs), IDS, COASTAL.nodata)
    for name, class_id in IDS.items():
        from_polygons = polygons.loc[polygons["class_id"] == class_id, "area_m2"].sum()
        assert from_polygons > 0
        assert summary[name] * 1e6 == pytest.approx(from_polygons, rel=2e-4), name
