"""STAC items for a scene's outputs."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

from eoseg.classes import COASTAL
from eoseg.outputs.atomic import output_files
from eoseg.outputs.stac import date_in_text, scene_datetime, write_stac_item

DATA = Path(__file__).resolve().parents[1] / "data"
S2 = DATA / "s2_virginia_10m_6band_crop.tif"
L8 = DATA / "l8_collar_crop.tif"
PROJ = "https://stac-extensions.github.io/projection/"
CLASSIFICATION = "https://stac-extensions.github.io/classification/"


def _write_item(tmp_path: Path, scene: Path, **kwargs) -> dict:
    plan = output_files(tmp_path / "out", "scene")
    plan.out_dir.mkdir(exist_ok=True)
    with rasterio.open(scene) as ds:
        grid = {"crs": ds.crs, "transform": ds.transform, "shape": ds.shape}
    path = write_stac_item(plan.stac, scene_path=scene, item_id="scene", outputs=plan.assets(), scheme=COASTAL,
                           **{**grid, **kwargs})
    assert [p.name for p in plan.out_dir.iterdir()] == ["scene.stac.json"]  # no temporaries
    return json.loads(path.read_text())


def _tiny_scene(path: Path, tags: dict | None = None) -> Path:
    profile = {"driver": "GTiff", "width": 4, "height": 4, "count": 1, "dtype": "uint8", "crs": "EPSG:32618",
               "transform": rasterio.Affine(10, 0, 446340, 0, -10, 4169220)}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.zeros((1, 4, 4), np.uint8))
        if tags:
            ds.update_tags(**tags)
    return path


@pytest.fixture(scope="module")
def s2_item(tmp_path_factory) -> dict:
    return _write_item(tmp_path_factory.mktemp("stac"), S2)


def test_item_structure(s2_item):
    item = s2_item
    assert item["type"] == "Feature" and item["id"] == "scene"
    assert item["stac_version"].startswith("1.")
    assert any(e.startswith(PROJ) for e in item["stac_extensions"])
    assert any(e.startswith(CLASSIFICATION) for e in item["stac_extensions"])
    assert item["properties"]["datetime"]
    assert item["geometry"]["type"] == "Polygon"
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) > 4
    pystac.Item.from_dict(item)  # pystac reads it back


def test_bbox_is_around_virginia(s2_item):
    west, south, east, north = s2_item["bbox"]
    assert -75.7 < west < east < -75.5
    assert 37.6 < south < north < 37.7
    lons = [p[0] for p in s2_item["geometry"]["coordinates"][0]]
    assert min(lons) == pytest.approx(west) and max(lons) == pytest.approx(east)


def test_projection_fields(s2_item):
    props = s2_item["properties"]
    assert props["proj:code"] == "EPSG:32618"
    assert props["proj:shape"] == [256, 320]
    assert props["proj:transform"] == [10.0, 0.0, 446340.0, 0.0, -10.0, 4169220.0]


def test_classification_on_the_classes_asset(s2_item):
    classes = s2_item["assets"]["classes"]["classification:classes"]
    assert len(classes) == 4
    for entry, info in zip(classes, COASTAL.classes, strict=True):
        assert entry["value"] == info.id and entry["name"] == info.name
        assert entry["description"] == info.description
        assert entry["color_hint"] == info.hex[1:].upper() and "#" not in entry["color_hint"]


def test_assets_media_types_roles_and_relative_hrefs(s2_item):
    assets = s2_item["assets"]
    assert assets["classes"]["href"] == "./scene_classes.tif"
    assert assets["classes"]["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert assets["probabilities"]["type"] == assets["classes"]["type"]
    assert assets["polygons"]["type"] == "application/geopackage+sqlite3"
    assert assets["classes_style"]["type"] == "text/xml" and "style" in assets["classes_style"]["roles"]
    assert assets["classes_metadata"]["roles"] == ["metadata"]
    assert assets["classes"]["roles"] == ["data"]
    for asset in assets.values():
        assert not os.path.isabs(asset["href"]) and "://" not in asset["href"]


@pytest.fixture
def offline_validator(monkeypatch):
    """pystac's jsonschema validator with every schema local: the core ones pystac ships, the projection and
    classification extension schemas from tests/data/stac_schemas; any network access fails the test."""
    import socket

    from pystac.validation import JsonSchemaSTACValidator, RegisteredValidator

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during STAC validation: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    validator = JsonSchemaSTACValidator()
    for path in sorted((DATA / "stac_schemas").glob("*.json")):
        schema = json.loads(path.read_text())
        validator.schema_cache[schema["$id"].rstrip("#")] = schema
    monkeypatch.setattr(RegisteredValidator, "_validator", validator)
    return validator


def test_validates_against_the_stac_schemas(s2_item, offline_validator):
    import jsonschema  # noqa: F401  (a test requirement: no silent skip without it)

    item = pystac.Item.from_dict(s2_item)
    validated = item.validate()
    assert any(uri.startswith(PROJ) for uri in validated) and any(uri.startswith(CLASSIFICATION) for uri in validated)
    broken = json.loads(json.dumps(s2_item))
    classes = broken["assets"]["classes"].get("classification:classes") or broken["properties"].get(
        "classification:classes")
    assert classes, "the item describes its classes"
    del classes[0]["value"]  # a class without its raster value
    with pytest.raises(pystac.errors.STACValidationError):
        pystac.Item.from_dict(broken).validate()


def test_no_crs_gives_null_geometry(tmp_path):
    path = write_stac_item(tmp_path / "x.stac.json", scene_path=S2, item_id="x",
                           outputs={"classes": tmp_path / "x_classes.tif"}, crs=None,
                           transform=rasterio.Affine.identity(), shape=(96, 96), scheme=COASTAL)
    item = json.loads(path.read_text())
    assert item["geometry"] is None
    assert item.get("bbox") is None
    assert item["properties"]["proj:code"] is None


def test_datetime_from_a_landsat_scene_tag():
    when, source = scene_datetime(L8)
    assert when == dt.datetime(2015, 5, 2, tzinfo=dt.UTC) and source == "tag:SCENE"


def test_datetime_sources_in_order(tmp_path):
    acquired = _tiny_scene(tmp_path / "S2A_20160112_x.tif", {"ACQUISITION_DATE": "2016-01-13T15:45:00Z",
                                                             "TIFFTAG_DATETIME": "2020:01:01 00:00:00"})
    assert scene_datetime(acquired) == (dt.datetime(2016, 1, 13, 15, 45, tzinfo=dt.UTC), "tag:ACQUISITION_DATE")
    named = _tiny_scene(tmp_path / "LC81070352015122LGN00_B2B3B4.tif", {"TIFFTAG_DATETIME": "2020:01:01 00:00:00"})
    assert scene_datetime(named) == (dt.datetime(2015, 5, 2, tzinfo=dt.UTC), "filename")
    tiff = _tiny_scene(tmp_path / "plain.tif", {"TIFFTAG_DATETIME": "2019:07:04 10:20:30"})
    assert scene_datetime(tiff) == (dt.datetime(2019, 7, 4, 10, 20, 30, tzinfo=dt.UTC), "tag:TIFFTAG_DATETIME")
    bare = shutil.copy(S2, tmp_path / "bare.tif")
    os.utime(bare, (1_500_000_000, 1_500_000_000))
    assert scene_datetime(Path(bare)) == (dt.datetime.fromtimestamp(1_500_000_000, dt.UTC), "file_mtime")


@pytest.mark.parametrize(("text", "expected"), [
    ("S2A_18SVG_20160112_L1C_virginia_10m_6band.tif", dt.datetime(2016, 1, 12, tzinfo=dt.UTC)),
    ("2017-10-02-18-57-29_L8_GREATER_KLAMATH_ms.tif", dt.datetime(2017, 10, 2, tzinfo=dt.UTC)),
    ("LC08_L1TP_044034_20170105_20170218_01_T1_B4.TIF", dt.datetime(2017, 1, 5, tzinfo=dt.UTC)),
    ("LC81070352015122LGN00", dt.datetime(2015, 5, 2, tzinfo=dt.UTC)),
    ("20190125T185649_20190125T185958_T10SEG-0.jpg", dt.datetime(2019, 1, 25, 18, 56, 49, tzinfo=dt.UTC)),
    ("scene_12345678.tif", None),
    ("s2_virginia_10m_6band_crop.tif", None),
])
def test_date_in_text(text, expected):
    assert date_in_text(text) == expected


def test_explicit_datetime_and_properties(tmp_path):
    when = dt.datetime(2020, 2, 3, 4, 5, 6)
    item = _write_item(tmp_path, S2, datetime=when, properties={"eoseg:model": "resunet"})
    props = item["properties"]
    assert props["datetime"] == "2020-02-03T04:05:06Z"
    assert props["eoseg:datetime_source"] == "argument"
    assert props["eoseg:model"] == "resunet"
