"""RasterSink → Cloud-Optimized GeoTIFF, on class rasters derived from the real test scenes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from eoseg.classes import COASTAL
from eoseg.outputs.cog import RasterSink, category_names, overview_count, pam_xml, validate_cog

DATA = Path(__file__).resolve().parents[1] / "data"
S2 = DATA / "s2_virginia_10m_6band_crop.tif"
L8 = DATA / "l8_collar_crop.tif"
NODATA = 255


def s2_classes() -> tuple[np.ndarray, rasterio.profiles.Profile]:
    """Water by NDWI, surf by brightness, sand by bright SWIR, the rest 'other' (B02 B03 B04 B08 B11 B12)."""
    with rasterio.open(S2) as ds:
        blue, green, _, nir, swir1, _ = ds.read().astype("float32")
        profile = ds.profile
    ndwi = (green - nir) / np.maximum(green + nir, 1)
    classes = np.full(blue.shape, 3, np.uint8)
    classes[ndwi > 0.2] = 0
    classes[(blue > 1500) & (ndwi > 0)] = 1
    classes[(classes == 3) & (swir1 > 2000) & (blue > 1200)] = 2
    return classes, profile


def l8_classes() -> tuple[np.ndarray, rasterio.profiles.Profile]:
    """Three brightness classes on the Landsat collar crop; 255 wherever the input is nodata (0)."""
    with rasterio.open(L8) as ds:
        bands = ds.read().astype("float32")
        profile = ds.profile
    red = bands[2]
    classes = np.where(red < 8100, 0, np.where(red > 9000, 2, 3)).astype(np.uint8)
    classes[bands[0] > 14000] = 1
    classes[(bands == 0).all(axis=0)] = NODATA
    return classes, profile


def write_strips(path: Path, classes: np.ndarray, profile, strip: int = 96) -> None:
    h, w = classes.shape
    with RasterSink(path, w, h, 1, "uint8", profile["crs"], profile["transform"], NODATA, "classes",
                    COASTAL) as sink:
        for row in range(0, h, strip):
            rows = classes[row : row + strip]
            sink.write(rows[np.newaxis], Window(0, row, w, rows.shape[0]))


@pytest.fixture(scope="module")
def s2_cog(tmp_path_factory) -> tuple[Path, np.ndarray, dict]:
    classes, profile = s2_classes()
    path = tmp_path_factory.mktemp("cog") / "s2_classes.tif"
    write_strips(path, classes, profile)
    return path, classes, profile


def test_class_cog_is_valid_and_keeps_the_grid(s2_cog):
    path, classes, profile = s2_cog
    is_valid, errors, warnings = validate_cog(path)
    assert is_valid, (errors, warnings)
    with rasterio.open(path) as ds:
        assert ds.crs == profile["crs"]
        assert ds.transform == profile["transform"]
        assert (ds.height, ds.width) == classes.shape
        assert ds.count == 1 and ds.dtypes[0] == "uint8"
        assert ds.nodata == NODATA
        assert ds.block_shapes[0] == (512, 512)
        assert ds.compression.name.lower() == "deflate"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) == [2]
        np.testing.assert_array_equal(ds.read(1), classes)


def test_class_cog_carries_palette_names_and_tags(s2_cog):
    path, _, _ = s2_cog
    with rasterio.open(path) as ds:
        cmap = ds.colormap(1)
        for info in COASTAL.classes:
            assert cmap[info.id] == (*info.colour, 255)
        assert cmap[NODATA][3] == 0
        assert ds.descriptions == ("class",)
        tags = ds.tags(1)
        assert {tags[f"class_{c.id}"] for c in COASTAL.classes} == set(COASTAL.names)
        assert "class_scheme" in ds.tags()


def test_category_names_are_read_back_by_gdal(s2_cog):
    path, _, _ = s2_cog
    aux = path.with_name(path.name + ".aux.xml")
    assert aux.exists()
    assert "<CategoryNames>" in aux.read_text()
    names = category_names(path)
    assert names[:4] == ["water", "whitewater", "sand", "other"]
    assert len(names) == 256 and names[NODATA] == "nodata"


def test_no_temporaries_remain(s2_cog):
    path, _, _ = s2_cog
    assert sorted(p.name for p in path.parent.iterdir()) == ["s2_classes.tif", "s2_classes.tif.aux.xml"]


def test_collar_nodata_is_kept_and_overviews_hold_classes(tmp_path):
    classes, profile = l8_classes()
    path = tmp_path / "l8_classes.tif"
    write_strips(path, classes, profile, strip=128)
    assert validate_cog(path)[0]
    with rasterio.open(path) as ds:
        data = ds.read(1)
        np.testing.assert_array_equal(data == NODATA, classes == NODATA)
        assert ds.overviews(1)
        overview = ds.read(1, out_shape=(ds.height // 2, ds.width // 2))
        assert set(np.unique(overview)) <= {0, 1, 2, 3, NODATA}  # MODE: real classes only


def test_probability_cog(tmp_path):
    classes, profile = s2_classes()
    h, w = classes.shape
    onehot = (np.arange(4)[:, None, None] == classes[None]).astype(np.uint8) * 255
    path = tmp_path / "s2_probs.tif"
    with RasterSink(path, w, h, 4, "uint8", profile["crs"], profile["transform"], None, "probs", COASTAL) as sink:
        for row in range(0, h, 100):
            sink.write(onehot[:, row : row + 100], Window(0, row, w, min(100, h - row)))
    assert validate_cog(path)[0]
    with rasterio.open(path) as ds:
        assert ds.descriptions == tuple(COASTAL.names)
        assert ds.scales == pytest.approx((1 / 255,) * 4)
        assert ds.tags(2)["class_name"] == "whitewater"
        assert ColorInterp.alpha not in ds.colorinterp  # 4 Byte bands must not become RGBA
        assert ds.overviews(1) == [2]
        np.testing.assert_array_equal(ds.read(), onehot)
        overview = ds.read(out_shape=(4, h // 2, w // 2)).astype(int)
        assert len(np.unique(overview)) > 2  # AVERAGE blends, MODE/NEAREST would give only 0 and 255
    assert not path.with_name(path.name + ".aux.xml").exists()


def test_exception_inside_the_block_leaves_nothing(tmp_path):
    classes, profile = s2_classes()
    path = tmp_path / "x_classes.tif"
    sink = RasterSink(path, 320, 256, 1, "uint8", profile["crs"], profile["transform"], NODATA, "classes",
                      COASTAL)
    with pytest.raises(RuntimeError, match="model crashed"), sink:
        sink.write(classes[np.newaxis, :64], Window(0, 0, 320, 64))
        assert any(p.name.startswith(".x_classes.") for p in tmp_path.iterdir())  # staging on disk
        raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_a_previous_output(tmp_path, s2_cog):
    src, classes, profile = s2_cog
    path = tmp_path / "x_classes.tif"
    path.write_bytes(src.read_bytes())
    before = path.read_bytes()
    sink = RasterSink(path, 320, 256, 1, "uint8", profile["crs"], profile["transform"], NODATA, "classes",
                      COASTAL)
    with pytest.raises(ValueError, match="does not match window"), sink:
        sink.write(classes[:10], Window(0, 0, 320, 20))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x_classes.tif"]


def test_unwritten_pixels_are_nodata(tmp_path):
    _, profile = s2_classes()
    path = tmp_path / "partial.tif"
    with RasterSink(path, 320, 256, 1, "uint8", profile["crs"], profile["transform"], NODATA, "classes",
                    COASTAL) as sink:
        sink.write(np.zeros((10, 320), np.uint8), Window(0, 0, 320, 10))
    with rasterio.open(path) as ds:
        data = ds.read(1)
    assert (data[:10] == 0).all() and (data[10:] == NODATA).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        RasterSink(Path("x.tif"), 1, 1, 1, "uint8", None, rasterio.Affine.identity(), 255, "labels", COASTAL)
    with pytest.raises(ValueError, match="one band"):
        RasterSink(Path("x.tif"), 1, 1, 2, "uint8", None, rasterio.Affine.identity(), 255, "classes", COASTAL)


def test_overview_count():
    assert overview_count(256, 256) == 0
    assert overview_count(320, 256) == 1
    assert overview_count(10980, 10980) == 6


def test_validate_rejects_a_plain_striped_tiff(tmp_path):
    path = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "width": 1024, "height": 600, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.zeros((1, 600, 1024), np.uint8))
    is_valid, errors, _ = validate_cog(path)
    assert not is_valid and errors


def test_pam_merges_into_what_gdal_wrote():
    existing = (
        '<PAMDataset><Metadata><MDI key="k">v</MDI></Metadata><PAMRasterBand band="1">'
        "<CategoryNames><Category>old</Category></CategoryNames><Metadata><MDI key=\"b\">1</MDI></Metadata>"
        "</PAMRasterBand></PAMDataset>"
    )
    merged = ET.fromstring(pam_xml(COASTAL, existing))
    assert merged.find("Metadata/MDI").text == "v"
    band = merged.find("PAMRasterBand")
    assert band.find("Metadata/MDI").text == "1"
    assert band.find("Description").text == "class"
    assert len(band.findall("CategoryNames")) == 1
    names = [c.text or "" for c in band.findall("CategoryNames/Category")]
    assert names[:4] == COASTAL.names and names[NODATA] == "nodata"
