"""eoseg.batch.summary: class areas in km² (projected, feet, geographic) and the summary CSV / GeoPackage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Proj
from rasterio.crs import CRS

from eoseg.batch import (
    class_areas_km2,
    write_summary,
)
from eoseg.outputs.areas import block_pixel_areas


def write_classes(path: Path, data: np.ndarray, crs, transform) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform, nodata=255) as ds:
        ds.write(data, 1)
    return path


IDS = {"water": 0, "whitewater": 1, "sand": 2, "other": 3}


def test_class_areas_projected_feet_geographic_and_none(tmp_path):
    data = np.array([[0, 0, 1, 255], [2, 3, 3, 3]], dtype=np.uint8)
    utm = write_classes(tmp_path / "utm.tif", data, CRS.from_epsg(32618), Affine(10, 0, 400000, 0, -10, 4e6))
    areas = class_areas_km2(utm, IDS, 255)
    # ellipsoidal: the planar grid area divided by the projection's areal scale there (~0.9994 at 100 km west)
    scale = Proj("EPSG:32618").get_factors(*Proj("EPSG:32618")(400020, 4e6 - 10, inverse=True)).areal_scale
    assert abs(scale - 1) > 3e-4
    planar = {"water": 2e-4, "whitewater": 1e-4, "sand": 1e-4, "other": 3e-4, "nodata": 1e-4}
    assert areas == pytest.approx({k: v / scale for k, v in planar.items()}, rel=1e-6)

    feet = write_classes(tmp_path / "ft.tif", data, CRS.from_epsg(2263), Affine(10, 0, 9e5, 0, -10, 2e5))
    scale = Proj("EPSG:2263").get_factors(*Proj("EPSG:2263")(9e5 + 20, 2e5 - 10, inverse=True)).areal_scale
    assert class_areas_km2(feet, IDS, 255)["other"] == pytest.approx(3 * (10 * 1200 / 3937) ** 2 / scale / 1e6,
                                                                      rel=1e-6)

    # 0.01° pixels at 0° and 60°N against the ellipsoid's area element M(φ)·N(φ)·cos φ·dφ·dλ (WGS84)
    a, e2, step = 6378137.0, 0.00669437999014, np.radians(0.01)
    for lat in (0.005, 60.005):
        w = 1 - e2 * np.sin(np.radians(lat)) ** 2
        expected = a * (1 - e2) / w**1.5 * a / w**0.5 * np.cos(np.radians(lat)) * step * step
        got = block_pixel_areas(Affine(0.01, 0, 10, 0, -0.01, lat + 0.005), CRS.from_epsg(4326), (1, 1))[0, 0]
        assert got == pytest.approx(expected, rel=1e-4)
    geo = write_classes(tmp_path / "geo.tif", data, CRS.from_epsg(4326), Affine(0.01, 0, 10, 0, -0.01, 60.01))
    second_row = block_pixel_areas(Affine(0.01, 0, 10, 0, -0.01, 60.0), CRS.from_epsg(4326), (1, 1))[0, 0]
    assert class_areas_km2(geo, IDS, 255)["other"] == pytest.approx(3 * second_row / 1e6, rel=1e-6)

    none = write_classes(tmp_path / "none.tif", data, None, Affine.identity())
    assert class_areas_km2(none, IDS, 255) == dict.fromkeys([*IDS, "nodata"])


def test_write_summary_csv_and_gpkg(tmp_path):
    import geopandas as gpd

    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    results = [
        {"relpath": "a/S2_20190101.tif", "status": "ok", "date": "2019-01-01", "date_source": "filename",
         "areas_km2": {"water": 1.5, "whitewater": 0.25, "sand": 0.5, "other": 2.0, "nodata": 0.0},
         "footprint": square},
        {"relpath": "bad.tif", "status": "failed"},
        {"relpath": "old.tif", "status": "skipped", "date": None, "date_source": None,
         "areas_km2": dict.fromkeys(["water", "whitewater", "sand", "other", "nodata"]), "footprint": None},
    ]
    csv_path = write_summary(tmp_path / "s.csv", results, list(IDS))
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ("scene,date,date_source,sensor,cloud_fraction,valid_km2,water_km2,whitewater_km2,sand_km2,"
                        "other_km2,nodata_km2")
    assert lines[1] == "a/S2_20190101.tif,2019-01-01,filename,,,4.25,1.5,0.25,0.5,2.0,0.0" and len(lines) == 3
    frame = gpd.read_file(write_summary(tmp_path / "s.gpkg", results, list(IDS)))
    assert frame.crs.to_epsg() == 4326 and list(frame["scene"]) == ["a/S2_20190101.tif", "old.tif"]
    assert frame.geometry.iloc[0].area == pytest.approx(1.0) and frame.geometry.iloc[1] is None
