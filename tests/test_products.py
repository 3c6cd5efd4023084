"""Archive products as scenes (eoseg.products): Landsat and Sentinel-2 folders, metadata files, band files and
STAC items predict exactly like a hand-made stack of the same pixels; quality layers mask clouds; one-line errors.

Fixtures: tests/data/products (built by tests/data/make_product_fixtures.py from real pixels and metadata).
"""

from __future__ import annotations

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
from rasterio.windows import Window

from eoseg.errors import BandMappingError, ConfigError, EosegError, GeoreferenceError, ProductError
from eoseg.predict import Predictor, PredictSettings
from eoseg.products import (
    QA_CIRRUS,
    QA_CLOUD,
    QA_DILATED_CLOUD,
    QA_SHADOW,
    QA_SNOW,
    find_product,
    mask_fractions,
    parse_mask,
    quality_flags,
)
from eoseg.radiometry import scene_scaling
from eoseg.scene import open_scene

PRODUCTS = Path(__file__).parent / "data" / "products"
LANDSAT = PRODUCTS / "LC80200392015216LGN00"
LANDSAT_ID = "LC80200392015216LGN00"
S2 = PRODUCTS / "S2A_18SVG_20160112_0_L1C"
ITEM = PRODUCTS / "s2_item.json"
GML = PRODUCTS / "S2A_18SVG_20160112_QI_DATA" / "MSK_CLOUDS_B00.gml"
FIVE = ("blue", "green", "red", "nir", "swir1")


@pytest.fixture(scope="module")
def five_band_bundle(bundle_factory, tmp_path_factory) -> Path:
    """A random-weight reflectance model on blue, green, red, nir, swir1 (the packaged resunet's bands)."""
    return bundle_factory(tmp_path_factory.mktemp("bundle") / "five", bands=FIVE, mode="reflectance",
                          mean=(0.1,) * 5, std=(0.1,) * 5, tile_size=64, overlap=16)


def predictor(bundle: Path, **settings) -> Predictor:
    return Predictor(bundle, PredictSettings(precision="fp32", device="cpu", **settings))


def classes_of(result) -> np.ndarray:
    with rasterio.open(result.outputs["classes"]) as ds:
        return ds.read(1)


def write_stack(path: Path, files: list[Path], names: list[str], upsample: dict[str, int] | None = None) -> Path:
    """What a user does by hand (gdal_merge / gdalbuildvrt -separate -r nearest): one multi-band GeoTIFF."""
    arrays = []
    for file in files:
        with rasterio.open(file) as ds:
            arrays.append(ds.read(1))
            if ds.transform.a == min(abs(rasterio.open(f).transform.a) for f in files):
                profile, transform = ds.profile, ds.transform
    shape = max(a.shape for a in arrays)
    arrays = [np.repeat(np.repeat(a, shape[0] // a.shape[0], 0), shape[1] // a.shape[1], 1) for a in arrays]
    meta = {"driver": "GTiff", "width": shape[1], "height": shape[0], "count": len(arrays), "dtype": "uint16",
            "crs": profile["crs"], "transform": transform, "nodata": 0}
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(np.stack(arrays))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return path


def landsat_stack(tmp_path: Path) -> Path:
    bands = [f"B{n}" for n in range(1, 8)]
    folder = tmp_path / "stack"
    folder.mkdir()
    shutil.copy(LANDSAT / f"{LANDSAT_ID}_MTL.txt", folder)
    return write_stack(folder / f"{LANDSAT_ID}_stack.tif", [LANDSAT / f"{LANDSAT_ID}_{b}.TIF" for b in bands], bands)


def s2_stack(tmp_path: Path) -> Path:
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    return write_stack(tmp_path / "S2A_18SVG_20160112_stack.tif", [S2 / f"{b}.tif" for b in bands], bands)


def copy_product(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / src.name))


# ---------------------------------------------------------------------------------------------- recognizing


@pytest.mark.parametrize("given", [LANDSAT, LANDSAT / f"{LANDSAT_ID}_MTL.txt", LANDSAT / f"{LANDSAT_ID}_B3.TIF"])
def test_a_landsat_product_is_found_from_its_folder_mtl_or_any_band_file(given):
    product = find_product(given)
    assert product.product_id == LANDSAT_ID and product.sensor == "landsat_oli" and product.level == "L1"
    assert [b.name for b in product.bands] == [f"B{n}" for n in range(1, 8)]
    assert product.roles[1:6] == ("blue", "green", "red", "nir", "swir1")
    assert product.quality.kind == "qa_pixel" and product.datetime.isoformat().startswith("2015-08-04T16:19:21")


@pytest.mark.parametrize("given", [S2, S2 / "MTD_MSIL1C.xml", S2 / "B11.tif", ITEM])
def test_a_sentinel2_product_is_found_from_its_folder_metadata_band_file_or_stac_item(given):
    product = find_product(given)
    assert product.product_id == "S2A_18SVG_20160112_0_L1C" and product.sensor == "sentinel2"
    assert {b.name: b.role for b in product.bands}["B11"] == "swir1"
    assert all(b.scale == 1e-4 and b.offset == 0.0 for b in product.bands)  # baseline 02.01: no -1000 offset
    assert product.datetime.date().isoformat() == "2016-01-12"


def test_plain_rasters_are_not_products(s2_scene, data_dir):
    assert find_product(s2_scene) is None and find_product(data_dir / "LC80200392015216LGN00_l1_crop.tif") is None


def test_the_mtl_json_of_collection_2_is_read_like_the_txt(tmp_path):
    folder = copy_product(LANDSAT, tmp_path)
    mtl = folder / f"{LANDSAT_ID}_MTL.txt"
    groups = {"PRODUCT_CONTENTS": {"LANDSAT_PRODUCT_ID": LANDSAT_ID},
              "IMAGE_ATTRIBUTES": {"SPACECRAFT_ID": "LANDSAT_8", "DATE_ACQUIRED": "2015-08-04",
                                   "SCENE_CENTER_TIME": "16:19:21.7917421Z", "SUN_ELEVATION": "64.74360932"},
              "LEVEL1_RADIOMETRIC_RESCALING": {f"REFLECTANCE_{k}_BAND_{n}": v for n in range(1, 8)
                                               for k, v in (("MULT", "2.0000E-05"), ("ADD", "-0.100000"))}}
    (folder / f"{LANDSAT_ID}_MTL.json").write_text(json.dumps({"LANDSAT_METADATA_FILE": groups}))
    from_txt = find_product(mtl)
    mtl.unlink()
    from_json = find_product(folder / f"{LANDSAT_ID}_MTL.json")
    assert [(b.scale, b.offset) for b in from_json.bands] == [(b.scale, b.offset) for b in from_txt.bands]
    assert from_json.datetime == from_txt.datetime


# ---------------------------------------------------------------------------------------------- same as a stack


def test_landsat_folder_predicts_like_a_hand_made_stack(five_band_bundle, tmp_path):
    stack = landsat_stack(tmp_path)
    p = predictor(five_band_bundle, mask="none")
    by_hand = p.predict(stack, tmp_path / "hand", progress=False)
    for given, out in ((LANDSAT, "folder"), (LANDSAT / f"{LANDSAT_ID}_MTL.txt", "mtl"),
                       (LANDSAT / f"{LANDSAT_ID}_B2.TIF", "band")):
        result = p.predict(given, tmp_path / out, progress=False)
        assert result.outputs["classes"].name == f"{LANDSAT_ID}_classes.tif"
        assert result.scaling == by_hand.scaling and result.scaling["source"] == "landsat-l1-mtl"
        np.testing.assert_array_equal(classes_of(result), classes_of(by_hand))
    assert len(np.unique(classes_of(by_hand))) > 1  # a random model still separates this scene


def test_sentinel2_folder_with_20m_bands_and_stac_item_predict_like_a_hand_made_stack(five_band_bundle, tmp_path):
    stack = s2_stack(tmp_path)
    p = predictor(five_band_bundle)
    by_hand = p.predict(stack, tmp_path / "hand", progress=False)
    for given, out in ((S2, "folder"), (S2 / "MTD_MSIL1C.xml", "mtd"), (ITEM, "item")):
        result = p.predict(given, tmp_path / out, progress=False)
        assert result.height == result.width == 128  # on the 10 m grid
        assert result.scaling["scale"] == by_hand.scaling["scale"]
        assert result.scaling["offset"] == by_hand.scaling["offset"]
        np.testing.assert_array_equal(classes_of(result), classes_of(by_hand))


def test_the_20m_bands_come_back_as_the_original_10m_stack(shared_data, tmp_path):
    """Nearest resampling of the 20 m files gives back the source 10 m stack's (nearest-upsampled) pixels."""
    scene = open_scene(S2, roles=["swir1", "swir2"])
    with rasterio.open(scene.dataset) as ds:
        product = ds.read(list(scene.band_indexes))
    src = shared_data / "scenes" / "sentinel2_virginia" / "S2A_18SVG_20160112_L1C_virginia_10m_6band.tif"
    with rasterio.open(src) as ds:
        original = ds.read([5, 6], window=rasterio.windows.Window(1216, 640, 128, 128))
    np.testing.assert_array_equal(product, original)


def test_stac_item_scaling_and_roles_come_from_the_item(tmp_path):
    item = json.loads(ITEM.read_text())
    item["properties"]["s2:processing_baseline"] = "05.09"
    for asset in item["assets"].values():
        asset["href"] = str((PRODUCTS / asset["href"]).resolve())
    path = tmp_path / "item.json"
    item["assets"]["blue-jp2"] = {**item["assets"]["blue"], "href": "s3://requester-pays/B02.jp2"}  # a 2nd copy
    path.write_text(json.dumps(item))
    scene = open_scene(path, roles=list(FIVE))
    assert Path(scene.product.bands[0].href).name == "B02.tif" and len(scene.product.bands) == 6
    scaling = scene_scaling(scene)
    assert scaling.offset == (-0.1,) * 5  # baseline 04.00 on: DN offset -1000
    item["assets"]["blue"]["raster:bands"] = [{"scale": 0.0002, "offset": 0.5}]
    for asset in item["assets"].values():
        asset.setdefault("raster:bands", [{"scale": 0.0001, "offset": -0.1}])
    path.write_text(json.dumps(item))
    scaling = scene_scaling(open_scene(path, roles=list(FIVE)))
    assert scaling.source == "stac-raster-bands" and scaling.scale[0] == 0.0002 and scaling.offset[0] == 0.5


# ---------------------------------------------------------------------------------------------- masks


def test_quality_flags_follow_the_documented_bits_and_classes():
    qa = np.array([[[1 << 6, 1 << QA_CLOUD, 1 << QA_DILATED_CLOUD, 1 << QA_CIRRUS, 1 << QA_SHADOW, 1 << QA_SNOW, 1]]],
                  np.uint16)
    flags = quality_flags(qa, "qa_pixel")
    assert flags["clouds"].tolist() == [[False, True, True, True, False, False, False]]
    assert flags["shadow"].tolist() == [[False, False, False, False, True, False, False]]
    assert flags["snow"].tolist() == [[False, False, False, False, False, True, False]]
    assert flags["fill"].tolist() == [[False, False, False, False, False, False, True]]
    scl = np.array([[list(range(12))]], np.uint8)
    flags = quality_flags(scl, "scl")
    assert np.flatnonzero(flags["fill"]).tolist() == [0, 1]
    assert np.flatnonzero(flags["shadow"]).tolist() == [3]
    assert np.flatnonzero(flags["clouds"]).tolist() == [8, 9, 10]
    assert np.flatnonzero(flags["snow"]).tolist() == [11]


def test_mask_option_parsing():
    assert parse_mask(None) == ("clouds", "shadow") and parse_mask("none") == ()
    assert parse_mask("snow,clouds") == ("clouds", "snow")
    with pytest.raises(ConfigError, match="unknown mask class 'haze'"):
        parse_mask("clouds,haze")


def qa_classes() -> dict[str, np.ndarray]:
    with rasterio.open(LANDSAT / f"{LANDSAT_ID}_QA_PIXEL.TIF") as ds:
        return quality_flags(ds.read(), "qa_pixel")


def saturated_in_read_bands() -> np.ndarray:
    """QA_RADSAT pixels saturated in B2..B6 (the five-band model's bands); the fixture also saturates B1 only."""
    with rasterio.open(LANDSAT / f"{LANDSAT_ID}_QA_RADSAT.TIF") as ds:
        radsat = ds.read(1)
    assert (radsat == 1).any()  # B1 only: must stay valid
    return (radsat & sum(1 << (n - 1) for n in range(2, 7))) != 0


@pytest.mark.parametrize("mask", ["clouds,shadow", "clouds", "snow", "none"])
def test_clouds_in_qa_pixel_become_nodata(five_band_bundle, tmp_path, mask):
    flags = qa_classes()
    assert flags["clouds"].any() and flags["shadow"].any()
    result = predictor(five_band_bundle, mask=mask).predict(LANDSAT, tmp_path, progress=False)
    expected = saturated_in_read_bands() if mask != "none" else np.zeros_like(flags["clouds"])
    assert expected.any() or mask == "none"
    for name in parse_mask(mask):
        expected |= flags[name]
    np.testing.assert_array_equal(classes_of(result) == 255, expected)
    quality = result.quality
    if mask == "none":
        assert quality["cloud_fraction"] is None and quality["valid_fraction"] == 1.0
    else:
        assert quality["cloud_fraction"] == pytest.approx(flags["clouds"].mean(), abs=1e-6)
        assert quality["valid_fraction"] == pytest.approx(1 - expected.mean(), abs=1e-6)
    stac = json.loads(result.outputs["stac"].read_text())
    assert stac["properties"]["eoseg:valid_fraction"] == quality["valid_fraction"]
    assert stac["properties"]["datetime"].startswith("2015-08-04T16:19:21")
    assert stac["properties"]["eoseg:product"]["product_id"] == LANDSAT_ID
    assert ("eoseg:cloud_fraction" in stac["properties"]) == (mask != "none")


def test_scl_at_20m_masks_the_10m_pixels_it_covers(five_band_bundle, tmp_path):
    folder = copy_product(S2, tmp_path)
    with rasterio.open(folder / "B11.tif") as ds:
        profile = {**ds.profile, "dtype": "uint8", "nodata": None}
    scl = np.full((64, 64), 4, np.uint8)  # vegetation
    scl[5:20, 5:25] = 9  # cloud, high probability
    scl[30:40, 30:50] = 3  # cloud shadow
    scl[50:55, :] = 11  # snow
    scl[63, :] = 0  # no data
    with rasterio.open(folder / "SCL.tif", "w", **profile) as dst:
        dst.write(scl, 1)
    result = predictor(five_band_bundle).predict(folder, tmp_path / "out", progress=False)
    fine = np.repeat(np.repeat(scl, 2, 0), 2, 1)
    np.testing.assert_array_equal(classes_of(result) == 255, np.isin(fine, (0, 9, 3)))
    fractions = mask_fractions(open_scene(folder, roles=list(FIVE)))
    clear = (fine != 0).sum()
    assert fractions.cloud == pytest.approx((fine == 9).sum() / clear)
    assert fractions.snow == pytest.approx((fine == 11).sum() / clear) and fractions.fill == pytest.approx(1 / 64)


def test_a_fully_clouded_scene_says_so(five_band_bundle, tmp_path):
    folder = copy_product(LANDSAT, tmp_path)
    qa = folder / f"{LANDSAT_ID}_QA_PIXEL.TIF"
    with rasterio.open(qa, "r+") as ds:
        ds.write(np.full((1, 64, 64), 1 << QA_CLOUD, np.uint16))
    with pytest.raises(EosegError, match="masked as fill / clouds, shadow by its quality layer"):
        predictor(five_band_bundle).predict(folder, tmp_path / "out", progress=False)


# ---------------------------------------------------------------------------------------------- refusals


def test_a_missing_band_is_named(five_band_bundle, tmp_path):
    folder = copy_product(LANDSAT, tmp_path)
    (folder / f"{LANDSAT_ID}_B6.TIF").unlink()
    with pytest.raises(BandMappingError) as err:
        predictor(five_band_bundle).open(folder)
    assert f"{LANDSAT_ID} has no swir1 band (B6)" in str(err.value) and "\n" not in str(err.value)
    s2 = copy_product(S2, tmp_path)
    (s2 / "B11.tif").unlink()
    with pytest.raises(BandMappingError, match=r"has no swir1 band \(B11\)"):
        predictor(five_band_bundle).open(s2)


def test_unreadable_metadata_is_refused(tmp_path):
    folder = copy_product(LANDSAT, tmp_path)
    (folder / f"{LANDSAT_ID}_MTL.txt").write_bytes(b"\x00\x01garbage\xff")
    with pytest.raises(ProductError, match="is not a Landsat MTL"):
        open_scene(folder, roles=list(FIVE))
    s2 = copy_product(S2, tmp_path)
    (s2 / "MTD_MSIL1C.xml").write_text("<truncated")
    with pytest.raises(ProductError, match="cannot read the Sentinel-2 product metadata"):
        open_scene(s2, roles=list(FIVE))


def test_a_band_file_of_another_product_is_refused(tmp_path):
    folder = copy_product(LANDSAT, tmp_path)
    shutil.copy(folder / f"{LANDSAT_ID}_B2.TIF", folder / "LC80200392015232LGN00_B2.TIF")
    with pytest.raises(ProductError, match="band files of two products"):
        open_scene(folder, roles=list(FIVE))
    assert open_scene(folder / f"{LANDSAT_ID}_MTL.txt", roles=list(FIVE)).stem == LANDSAT_ID  # the MTL chooses
    s2 = copy_product(S2, tmp_path)
    shutil.copy(s2 / "B02.tif", s2 / "T18SVG_20160122T160000_B02.tif")
    with pytest.raises(ProductError, match="band files of two products"):
        open_scene(s2, roles=list(FIVE))


def test_bands_on_different_crss_are_refused(tmp_path):
    folder = copy_product(LANDSAT, tmp_path)
    with rasterio.open(folder / f"{LANDSAT_ID}_B5.TIF", "r+") as ds:
        ds.crs = rasterio.crs.CRS.from_epsg(32617)
    with pytest.raises(GeoreferenceError, match="band B5 .* is on EPSG:32617, the other bands on EPSG:32616"):
        open_scene(folder, roles=list(FIVE))


def test_an_item_collection_needs_an_item_id(tmp_path):
    item = json.loads(ITEM.read_text())
    for asset in item["assets"].values():
        asset["href"] = str((PRODUCTS / asset["href"]).resolve())
    second = {**item, "id": "second"}
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [item, second]}))
    with pytest.raises(ProductError, match="holds 2 items"):
        open_scene(path, roles=list(FIVE))
    assert open_scene(f"{path}#second", roles=list(FIVE)).stem == "second"


# ---------------------------------------------------------------------------------------------- archive layouts


C2_ID = "LC08_L2SP_020039_20150804_20200908_02_T1"  # a Collection 2 name for the test layout (not a real product)


def test_a_collection_2_level_2_folder_uses_surface_reflectance_bands_and_level_2_scaling(tmp_path):
    folder = tmp_path / C2_ID
    folder.mkdir()
    for n in range(1, 8):
        shutil.copy(LANDSAT / f"{LANDSAT_ID}_B{n}.TIF", folder / f"{C2_ID}_SR_B{n}.TIF")
    shutil.copy(LANDSAT / f"{LANDSAT_ID}_QA_PIXEL.TIF", folder / f"{C2_ID}_QA_PIXEL.TIF")
    shutil.copy(LANDSAT / f"{LANDSAT_ID}_B1.TIF", folder / f"{C2_ID}_ST_B10.TIF")  # thermal: not a model band
    mtl = {"LANDSAT_METADATA_FILE": {
        "PRODUCT_CONTENTS": {"LANDSAT_PRODUCT_ID": C2_ID, "PROCESSING_LEVEL": "L2SP"},
        "IMAGE_ATTRIBUTES": {"SPACECRAFT_ID": "LANDSAT_8", "DATE_ACQUIRED": "2015-08-04",
                             "SCENE_CENTER_TIME": "16:19:21.7917421Z"},
        "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": {f"REFLECTANCE_{k}_BAND_{n}": v for n in range(1, 8)
                                                  for k, v in (("MULT", "2.75e-05"), ("ADD", "-0.2"))}}}
    (folder / f"{C2_ID}_MTL.json").write_text(json.dumps(mtl))
    scene = open_scene(folder / f"{C2_ID}_SR_B4.TIF", roles=list(FIVE))
    assert scene.stem == C2_ID and scene.product.level == "L2"
    assert [d for d in scene.band_descriptions] == ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6"]
    scaling = scene_scaling(scene)
    assert scaling.source == "landsat-c2-l2" and scaling.scale == (2.75e-05,) * 5 and scaling.offset == (-0.2,) * 5
    (folder / f"{C2_ID}_SR_B6.TIF").unlink()
    with pytest.raises(BandMappingError, match=r"has no swir1 band \(SR_B6\)"):
        open_scene(folder, roles=list(FIVE))


def test_a_sentinel2_l2a_safe_takes_the_finest_file_of_each_band_and_the_boa_offset(tmp_path):
    safe = tmp_path / "S2A_MSIL2A_20160112T160000_N0500_R097_T18SVG_20160112T160000.SAFE"
    img = safe / "GRANULE" / "L2A_T18SVG_A000000_20160112T160000" / "IMG_DATA"
    (img / "R10m").mkdir(parents=True)
    (img / "R20m").mkdir()
    (safe / "GRANULE" / "L2A_T18SVG_A000000_20160112T160000" / "QI_DATA").mkdir()
    key = "T18SVG_20160112T160000"
    for band in ("B02", "B03", "B04", "B08"):
        shutil.copy(S2 / f"{band}.tif", img / "R10m" / f"{key}_{band}_10m.tif")
    for band in ("B11", "B12"):
        shutil.copy(S2 / f"{band}.tif", img / "R20m" / f"{key}_{band}_20m.tif")
    shutil.copy(S2 / "B11.tif", img / "R20m" / f"{key}_B02_20m.tif")  # coarser copy of B02: not chosen
    shutil.copy(S2 / "B11.tif", safe / "GRANULE" / "L2A_T18SVG_A000000_20160112T160000" / "QI_DATA" /
                "MSK_DETFOO_B02.tif")  # a per-band quality mask, not a band
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    (safe / "MTD_MSIL2A.xml").write_text(
        '<n1:Level-2A_User_Product xmlns:n1="x"><n1:General_Info><Product_Info>'
        "<PRODUCT_START_TIME>2016-01-12T16:00:00.000Z</PRODUCT_START_TIME><PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>"
        "<PROCESSING_BASELINE>05.00</PROCESSING_BASELINE>"
        f"<PRODUCT_URI>{safe.name}</PRODUCT_URI></Product_Info><Product_Image_Characteristics>"
        f"<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE>10000</BOA_QUANTIFICATION_VALUE>"
        f"</QUANTIFICATION_VALUES_LIST><BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>"
        "</Product_Image_Characteristics></n1:General_Info></n1:Level-2A_User_Product>")
    product = find_product(safe)
    assert product.product_id == safe.name[:-5] and product.level == "L2A"
    assert Path({b.name: b.href for b in product.bands}["B02"]).name == f"{key}_B02_10m.tif"
    assert all(b.offset == -0.1 and b.scale == 1e-4 for b in product.bands)
    assert product.datetime.isoformat() == "2016-01-12T16:00:00+00:00"
    scene = open_scene(safe / "MTD_MSIL2A.xml", roles=list(FIVE))
    assert (scene.width, scene.height) == (128, 128)


def test_the_gdal_cache_is_sized_for_every_band_file_of_a_product(tmp_path):
    from eoseg.process import MIN_GDAL_CACHE, block_rows_cache_bytes

    rows = 16384  # enough block rows that the need exceeds the floor for these tiny files
    per_file = []
    for i, band in enumerate(("B02", "B03", "B04", "B08", "B11", "B12")):
        plain = Path(shutil.copy(S2 / f"{band}.tif", tmp_path / f"plain{i}.tif"))  # not named as a product
        per_file.append(block_rows_cache_bytes(plain, rows) - 16 * 2**20)
    assert min(per_file) > MIN_GDAL_CACHE - 16 * 2**20
    assert block_rows_cache_bytes(S2, rows) == sum(per_file) + 16 * 2**20
    assert block_rows_cache_bytes(S2 / "B02.tif", rows) == sum(per_file) + 16 * 2**20  # a band file: its product


def test_batch_discovery_makes_one_job_per_product(tmp_path):
    from eoseg.batch.discovery import discover_scenes

    arch = tmp_path / "arch"
    shutil.copytree(S2, arch / "s2" / "anything")  # per-band files without a PRODUCT_URI: the folder names it
    shutil.copy(S2 / "B02.tif", arch / "s2" / "anything" / "TCI.tif")  # other files of a product are not scenes
    shutil.copytree(LANDSAT, arch / "single" / LANDSAT_ID)
    shutil.copy(LANDSAT / f"{LANDSAT_ID}_B1.TIF", arch / "single" / LANDSAT_ID / f"{LANDSAT_ID}_SAA.TIF")
    flat = arch / "flat"
    flat.mkdir()
    other = "LC80200392015232LGN00"
    for f in LANDSAT.iterdir():
        shutil.copy(f, flat / f.name)
        shutil.copy(f, flat / f.name.replace(LANDSAT_ID, other))
    shutil.copy(Path(__file__).parent / "data" / "s2_virginia_10m_6band_crop.tif", flat / "plain.tif")
    jobs = discover_scenes([arch])
    assert sorted(str(j.relpath) for j in jobs) == sorted(
        [f"flat/{LANDSAT_ID}", f"flat/{other}", "flat/plain.tif", "s2/anything", f"single/{LANDSAT_ID}"])
    by_rel = {str(j.relpath): j for j in jobs}
    assert by_rel[f"flat/{other}"].path.name == f"{other}_MTL.txt"  # the MTL stands for its product
    assert open_scene(by_rel[f"flat/{other}"].path, roles=list(FIVE)).stem == other


# ---------------------------------------------------------------------------------------------- L1C GML cloud masks


def old_l1c(tmp_path: Path, layout: str, gml_text: str | None = None, gml_name: str = "MSK_CLOUDS_B00.gml") -> Path:
    """The Sentinel-2 fixture as an L1C product of baseline 02.01 holding a GML cloud mask (the fixture's unless
    ``gml_text``): 'safe' (GRANULE/<granule>/IMG_DATA and QI_DATA) or 'folder' (the GML beside the band files)."""
    if layout == "folder":
        folder = copy_product(S2, tmp_path)
        qi = folder
    else:
        folder = tmp_path / "S2A_MSIL1C_20160112T160652_N0201_R097_T18SVG_20160112T160652.SAFE"
        granule = folder / "GRANULE" / "L1C_T18SVG_A002920_20160112T160652"
        (granule / "IMG_DATA").mkdir(parents=True)
        qi = granule / "QI_DATA"
        qi.mkdir()
        shutil.copy(S2 / "MTD_MSIL1C.xml", folder)
        for band in ("B02", "B03", "B04", "B08", "B11", "B12"):
            shutil.copy(S2 / f"{band}.tif", granule / "IMG_DATA" / f"T18SVG_20160112T160652_{band}.tif")
    (qi / gml_name).write_text(GML.read_text() if gml_text is None else gml_text)
    return folder


def gml_clouds_on_grid(kind: str | None = None) -> np.ndarray:
    """The fixture GML's polygons (of ``kind``, or all) rasterized on the whole 10 m grid at once."""
    frame = pyogrio.read_dataframe(GML, WRITE_GFS="NO")
    assert sorted(set(frame["maskType"])) == ["CIRRUS", "OPAQUE"] and str(frame.crs) == "EPSG:32618"
    if kind is not None:
        frame = frame[frame["maskType"] == kind]
    with rasterio.open(S2 / "B02.tif") as ds:
        return rasterio.features.rasterize(frame.geometry, out_shape=ds.shape, transform=ds.transform) != 0


@pytest.mark.parametrize("layout", ["safe", "folder"])
def test_l1c_gml_clouds_become_nodata_exactly_where_the_polygons_rasterize(five_band_bundle, tmp_path, caplog,
                                                                           layout):
    given = old_l1c(tmp_path, layout)
    expected = gml_clouds_on_grid()
    assert gml_clouds_on_grid("CIRRUS").any() and gml_clouds_on_grid("OPAQUE").any() and not expected.all()
    with caplog.at_level(logging.WARNING, logger="eoseg"):
        product = find_product(given)
        result = predictor(five_band_bundle).predict(given, tmp_path / "out", progress=False)
    assert product.level == "L1C" and product.quality.kind == "msk_clouds"
    assert "not masked" not in caplog.text
    np.testing.assert_array_equal(classes_of(result) == 255, expected)  # opaque and cirrus, windows of 64 px
    assert result.quality["cloud_fraction"] == pytest.approx(expected.mean(), abs=1e-6)
    assert result.quality["valid_fraction"] == pytest.approx(1 - expected.mean(), abs=1e-6)
    stac = json.loads(result.outputs["stac"].read_text())["properties"]
    assert stac["eoseg:cloud_fraction"] == result.quality["cloud_fraction"] and stac["eoseg:masked"] == [
        "clouds", "shadow"]
    snow = predictor(five_band_bundle, mask="snow").predict(given, tmp_path / "snow", progress=False)
    assert not (classes_of(snow) == 255).any()  # the GML has no snow (or shadow): --mask snow masks nothing


def test_gml_clouds_read_window_by_window_match_the_whole_grid(tmp_path):
    from eoseg.products.gml import CIRRUS, OPAQUE, GmlCloudLayer, read_cloud_gml

    scene = open_scene(old_l1c(tmp_path, "safe"), roles=list(FIVE))
    layer = GmlCloudLayer(read_cloud_gml(scene.mask.source, scene.crs), scene.transform, scene.width, scene.height)
    pieces = np.full((scene.height, scene.width), 9, np.uint8)
    for row in range(0, scene.height, 37):
        for col in range(0, scene.width, 29):
            window = Window(col, row, min(29, scene.width - col), min(37, scene.height - row))
            pieces[row:row + window.height, col:col + window.width] = layer.read(window=window)[0]
    whole = np.where(gml_clouds_on_grid("OPAQUE"), OPAQUE, np.where(gml_clouds_on_grid("CIRRUS"), CIRRUS, 0))
    np.testing.assert_array_equal(pieces, whole)
    assert layer.read(window=Window(0, 0, 4, 4)).sum() == 0  # a clear corner: no polygon reaches it

    # edges off the 10 m grid (ESA's run along it): pixel centres decide, in every window as on the whole grid
    slanted = "448013.7 4173041.2 448702.9 4172677.4 448391.3 4171803.8 447931.6 4172255.1 448013.7 4173041.2"
    text = re.sub(r"(<gml:posList[^>]*>)[^<]*", rf"\g<1>{slanted}", GML.read_text(), count=1)
    file = old_l1c(tmp_path / "slanted", "folder", text) / GML.name
    layer = GmlCloudLayer(read_cloud_gml(file, scene.crs), scene.transform, scene.width, scene.height)
    frame = pyogrio.read_dataframe(file, WRITE_GFS="NO")
    shapes = [(g, OPAQUE if t == "OPAQUE" else CIRRUS) for g, t in zip(frame.geometry, frame["maskType"], strict=True)]
    whole = rasterio.features.rasterize(shapes, out_shape=(scene.height, scene.width), transform=scene.transform)
    touched = rasterio.features.rasterize(shapes, out_shape=whole.shape, transform=scene.transform, all_touched=True)
    assert (whole != touched).any()  # the burn rule matters for these edges
    for row in range(0, scene.height, 37):
        for col in range(0, scene.width, 29):
            window = Window(col, row, min(29, scene.width - col), min(37, scene.height - row))
            np.testing.assert_array_equal(layer.read(window=window)[0],
                                          whole[row:row + window.height, col:col + window.width])


def test_the_gml_mask_is_found_under_its_older_name_and_scl_wins_over_it(tmp_path):
    oper = old_l1c(tmp_path / "oper", "folder",
                   gml_name="S2A_OPER_MSK_CLOUDS_SGS__20160112T200000_A002920_T18SVG_B00_MSIL1C.gml")
    assert find_product(oper).quality.kind == "msk_clouds"
    l2a = old_l1c(tmp_path / "l2a", "folder")
    shutil.copy(l2a / "B11.tif", l2a / "SCL.tif")
    assert find_product(l2a).quality.kind == "scl"


@pytest.mark.parametrize("variant", ["no_features", "no_geometry"])
def test_an_empty_gml_masks_nothing_and_does_not_warn(five_band_bundle, tmp_path, caplog, variant):
    text = GML.read_text()
    element = "MaskFeature" if variant == "no_features" else "extentOf"
    text, n = re.subn(rf"\s*<eop:{element}[ >].*?</eop:{element}>", "", text, flags=re.S)
    assert n >= 1 and ("MaskFeature" in text) == (variant == "no_geometry")
    given = old_l1c(tmp_path, "safe", text)
    with caplog.at_level(logging.WARNING, logger="eoseg"):
        result = predictor(five_band_bundle).predict(given, tmp_path / "out", progress=False)
    assert caplog.text == ""
    assert not (classes_of(result) == 255).any()
    assert result.quality["cloud_fraction"] == 0.0 and result.quality["valid_fraction"] == 1.0


def test_a_corrupt_gml_is_refused_in_one_line_unless_masks_are_off(tmp_path):
    given = old_l1c(tmp_path, "safe", GML.read_text()[:1500])  # a truncated download
    with pytest.raises(ProductError) as err:
        open_scene(given, roles=list(FIVE))
    message = str(err.value)
    assert "MSK_CLOUDS_B00.gml" in message and "cannot read the Sentinel-2 GML cloud mask" in message
    assert "\n" not in message and "--mask none" in message
    assert open_scene(given, roles=list(FIVE), mask="none").mask is None
