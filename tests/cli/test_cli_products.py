"""`eoseg predict / batch / tile` on archive products: outputs named by product id, --mask, --max-cloud,
one-line refusals with exit 1, batch over a folder of products with a broken one."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
from click.testing import CliRunner

from eoseg.cli import main

PRODUCTS = Path(__file__).parents[1] / "data" / "products"
LANDSAT_ID = "LC80200392015216LGN00"
LANDSAT = PRODUCTS / LANDSAT_ID
S2_ID = "S2A_18SVG_20160112_0_L1C"
S2 = PRODUCTS / S2_ID
GML = PRODUCTS / "S2A_18SVG_20160112_QI_DATA" / "MSK_CLOUDS_B00.gml"
FIVE = ("blue", "green", "red", "nir", "swir1")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *needles) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("eoseg: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bundle(bundle_factory, tmp_path_factory) -> Path:
    return bundle_factory(tmp_path_factory.mktemp("bundle") / "five", bands=FIVE, mode="reflectance",
                          mean=(0.1,) * 5, std=(0.1,) * 5, tile_size=64, overlap=16)


def test_predict_a_landsat_folder_masks_clouds_and_reports_fractions(bundle, tmp_path):
    result = run("predict", LANDSAT, "--model", bundle, "--out", tmp_path, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "valid 83.6%, cloud 10.8%" in result.output and "landsat-l1-mtl" in result.output
    with rasterio.open(tmp_path / f"{LANDSAT_ID}_classes.tif") as ds:
        classes = ds.read(1)
    with rasterio.open(LANDSAT / f"{LANDSAT_ID}_QA_PIXEL.TIF") as ds:
        qa = ds.read(1)
    with rasterio.open(LANDSAT / f"{LANDSAT_ID}_QA_RADSAT.TIF") as ds:
        radsat = ds.read(1)
    cloud_or_shadow = (qa & 0b11110) != 0  # dilated cloud, cirrus, cloud, shadow
    saturated = (radsat & 0b111110) != 0  # in bands 2-6, which the model reads (band 1 is not)
    np.testing.assert_array_equal(classes == 255, cloud_or_shadow | saturated)
    item = json.loads((tmp_path / f"{LANDSAT_ID}.stac.json").read_text())
    assert item["properties"]["eoseg:cloud_fraction"] == pytest.approx(0.107666, abs=1e-6)
    snow_only = run("predict", LANDSAT, "--model", bundle, "--out", tmp_path / "snow", "--mask", "snow", "-q")
    assert snow_only.exit_code == 0, snow_only.output
    with rasterio.open(tmp_path / "snow" / f"{LANDSAT_ID}_classes.tif") as ds:
        np.testing.assert_array_equal(ds.read(1) == 255, saturated)  # saturation always, no snow here


def test_predict_a_sentinel2_folder_and_a_stac_item(bundle, tmp_path):
    for given, out in ((S2, "folder"), (PRODUCTS / "s2_item.json", "item")):
        result = run("predict", given, "--model", bundle, "--out", tmp_path / out, "--precision", "fp32", "-q")
        assert result.exit_code == 0, result.output
        assert (tmp_path / out / f"{S2_ID}_classes.tif").exists()
    with rasterio.open(tmp_path / "folder" / f"{S2_ID}_classes.tif") as a, \
            rasterio.open(tmp_path / "item" / f"{S2_ID}_classes.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.res == (10.0, 10.0)


def test_bad_mask_option_is_a_usage_error(bundle, tmp_path):
    result = run("predict", LANDSAT, "--model", bundle, "--out", tmp_path, "--mask", "fog")
    assert result.exit_code == 2 and "unknown mask class 'fog'" in result.output


def broken(kind: str, tmp_path: Path) -> Path:
    """A copy of the Landsat fixture broken in one way."""
    folder = Path(shutil.copytree(LANDSAT, tmp_path / kind / LANDSAT_ID))
    if kind == "missing_band":
        (folder / f"{LANDSAT_ID}_B6.TIF").unlink()
    elif kind == "unreadable_mtl":
        (folder / f"{LANDSAT_ID}_MTL.txt").write_text("GROUP = L1_METADATA_FILE\n  GARBAGE\n")
    elif kind == "other_product":
        shutil.copy(folder / f"{LANDSAT_ID}_B4.TIF", folder / "LC80200392015232LGN00_B4.TIF")
    elif kind == "other_crs":
        with rasterio.open(folder / f"{LANDSAT_ID}_B3.TIF", "r+") as ds:
            ds.crs = rasterio.crs.CRS.from_epsg(4326)
    return folder


@pytest.mark.parametrize(("kind", "needles"), [
    ("missing_band", ("has no swir1 band (B6)",)),
    ("unreadable_mtl", (f"{LANDSAT_ID}_MTL.txt", "is not a Landsat MTL file")),
    ("other_product", ("band files of two products", "LC80200392015232LGN00_B4.TIF")),
    ("other_crs", ("band B3", "EPSG:4326", "share a CRS")),
])
def test_broken_products_are_refused_in_one_line(bundle, tmp_path, kind, needles):
    result = run("predict", broken(kind, tmp_path), "--model", bundle, "--out", tmp_path / "out")
    assert result.exit_code == 1
    one_line_error(result, *needles)
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_batch_over_two_products_and_a_broken_one(bundle, tmp_path):
    arch = tmp_path / "arch"
    shutil.copytree(LANDSAT, arch / "landsat" / LANDSAT_ID)
    shutil.copytree(S2, arch / "s2" / S2_ID)
    shutil.copytree(broken("missing_band", tmp_path), arch / "broken" / "LC80200392015232LGN00")
    (arch / "broken" / "LC80200392015232LGN00" / f"{LANDSAT_ID}_MTL.txt").rename(
        arch / "broken" / "LC80200392015232LGN00" / "LC80200392015232LGN00_MTL.txt")
    for f in (arch / "broken" / "LC80200392015232LGN00").glob(f"{LANDSAT_ID}_*"):
        f.rename(f.with_name(f.name.replace(LANDSAT_ID, "LC80200392015232LGN00")))
    out = tmp_path / "out"
    common = ("--model", bundle, "--out", out, "--workers", "1", "--precision", "fp32",
              "--dashboard-address", "127.0.0.1:0", "-q")
    result = run("batch", arch, *common, "--summary", out / "summary.csv")
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    assert [(r["relpath"], r["status"]) for r in lines] == [
        ("broken/LC80200392015232LGN00", "failed"), (f"landsat/{LANDSAT_ID}", "ok"), (f"s2/{S2_ID}", "ok")]
    assert "has no swir1 band (B6)" in lines[0]["error"]
    assert (out / "landsat" / f"{LANDSAT_ID}_classes.tif").exists() and (out / "s2" / f"{S2_ID}_classes.tif").exists()
    assert lines[1]["quality"]["cloud_fraction"] == pytest.approx(0.107666, abs=1e-6)
    with open(out / "summary.csv", newline="") as fh:
        rows = {r["scene"]: r for r in csv.DictReader(fh)}
    landsat, s2 = rows[f"landsat/{LANDSAT_ID}"], rows[f"s2/{S2_ID}"]
    assert (landsat["date"], landsat["sensor"], landsat["date_source"]) == ("2015-08-04", "landsat-8", "product")
    assert (s2["date"], s2["sensor"], s2["cloud_fraction"]) == ("2016-01-12", "sentinel-2a", "")
    assert float(landsat["cloud_fraction"]) == pytest.approx(0.107666, abs=1e-6)
    assert float(landsat["valid_km2"]) == pytest.approx(64 * 64 * 900 * 0.836426 / 1e6, rel=2e-3)  # UTM scale
    assert float(s2["valid_km2"]) == pytest.approx(128 * 128 * 100 / 1e6, rel=2e-3)

    cloudy = run("batch", arch / "landsat", arch / "s2", *common, "--max-cloud", "0.05", "--overwrite")
    assert cloudy.exit_code == 0, cloudy.output
    assert "too_cloudy      1" in cloudy.output and "cloud fraction 0.108 is above --max-cloud 0.05" in cloudy.output


def test_batch_reads_a_stac_item_collection(bundle, tmp_path):
    item = json.loads((PRODUCTS / "s2_item.json").read_text())
    for asset in item["assets"].values():
        asset["href"] = str((PRODUCTS / asset["href"]).resolve())
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": [item, {**item, "id": "again"}]}))
    out = tmp_path / "out"
    result = run("batch", collection, "--model", bundle, "--out", out, "--workers", "1", "--precision", "fp32",
                 "--dashboard-address", "127.0.0.1:0", "-q")
    assert result.exit_code == 0, result.output
    assert (out / f"{S2_ID}_classes.tif").exists() and (out / "again_classes.tif").exists()


def test_tile_a_product(tmp_path):
    result = run("tile", LANDSAT, "--size", "32", "--overlap", "0", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    tiles = sorted((tmp_path / "images").glob("*.tif"))
    assert tiles and all(t.name.startswith(f"{LANDSAT_ID}_") for t in tiles)
    with rasterio.open(tiles[0]) as ds:
        assert ds.descriptions[:2] == ("B1", "B2") and ds.res == (30.0, 30.0)


def l1c_with_gml(tmp_path: Path, text: str) -> Path:
    """The Sentinel-2 fixture (an L1C of baseline 02.01) with a GML cloud mask beside its band files."""
    folder = Path(shutil.copytree(S2, tmp_path / "in" / S2_ID))
    (folder / "MSK_CLOUDS_B00.gml").write_text(text)
    return folder


def test_predict_an_old_l1c_masks_its_gml_clouds(bundle, tmp_path, caplog):
    frame = pyogrio.read_dataframe(GML, WRITE_GFS="NO")
    with rasterio.open(S2 / "B02.tif") as ds:
        clouds = rasterio.features.rasterize(frame.geometry, out_shape=ds.shape, transform=ds.transform) != 0
    assert 0 < clouds.mean() < 0.5
    folder = l1c_with_gml(tmp_path, GML.read_text())
    with caplog.at_level(logging.WARNING, logger="eoseg"):
        result = run("predict", folder, "--model", bundle, "--out", tmp_path / "out", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert f"valid {1 - clouds.mean():.1%}, cloud {clouds.mean():.1%}" in result.output
    assert "not masked" not in caplog.text
    with rasterio.open(tmp_path / "out" / f"{S2_ID}_classes.tif") as ds:
        np.testing.assert_array_equal(ds.read(1) == 255, clouds)
    item = json.loads((tmp_path / "out" / f"{S2_ID}.stac.json").read_text())
    assert item["properties"]["eoseg:cloud_fraction"] == pytest.approx(clouds.mean(), abs=1e-6)

    empty = l1c_with_gml(tmp_path / "empty", re.sub(r"\s*<eop:MaskFeature .*?</eop:MaskFeature>", "", GML.read_text(),
                                                    flags=re.S))
    with caplog.at_level(logging.WARNING, logger="eoseg"):
        result = run("predict", empty, "--model", bundle, "--out", tmp_path / "empty_out", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "valid 100.0%, cloud 0.0%" in result.output and "not masked" not in caplog.text


def test_a_corrupt_gml_cloud_mask_is_refused_in_one_line(bundle, tmp_path):
    folder = l1c_with_gml(tmp_path, GML.read_text()[:-200])  # a truncated download
    result = run("predict", folder, "--model", bundle, "--out", tmp_path / "out")
    assert result.exit_code == 1
    one_line_error(result, "MSK_CLOUDS_B00.gml", "cannot read the Sentinel-2 GML cloud mask", "--mask none")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    off = run("predict", folder, "--model", bundle, "--out", tmp_path / "off", "--mask", "none", "-q")
    assert off.exit_code == 0, off.output
    with rasterio.open(tmp_path / "off" / f"{S2_ID}_classes.tif") as ds:
        assert not (ds.read(1) == 255).any()
