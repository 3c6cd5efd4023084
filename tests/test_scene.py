"""Opening scenes: preflight, nodata, band-role mapping and the errors users meet."""

import functools
import math
import os
import shutil

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from eoseg.errors import BandMappingError, EmptySceneError, GeoreferenceError, SceneReadError
from eoseg.scene import (
    SceneReader,
    check_blocks,
    detect_sensor,
    light_preflight,
    open_scene,
    preflight,
    read_window,
    role_of,
    sampled_stats,
)

RGBN = ("blue", "green", "red", "nir")


def rewrite(src, dst, fn=None, **profile_updates):
    """Copy a real raster, optionally changing its data (fn) and profile."""
    with rasterio.open(src) as ds:
        data = ds.read()
        profile = ds.profile | profile_updates
        descriptions = ds.descriptions
    if fn is not None:
        data = fn(data)
    profile["dtype"] = str(data.dtype)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        out.descriptions = descriptions
    return dst


def test_sentinel2_descriptions_map_to_roles(s2_scene):
    scene = open_scene(s2_scene, roles=("nir", "red", "green", "blue", "swir1"))
    assert scene.band_indexes == (4, 3, 2, 1, 5)
    assert scene.georeferenced and scene.crs.to_epsg() == 32618


def test_coastsat_layout_from_file_name(klamath_scene, nocrs_scene):
    assert open_scene(klamath_scene, roles=RGBN + ("swir1",)).band_indexes == (1, 2, 3, 4, 5)
    assert open_scene(nocrs_scene, roles=RGBN, allow_ungeoreferenced=True).band_indexes == (1, 2, 3, 4)


def test_landsat_band_numbers_depend_on_sensor():
    assert role_of("B2", "landsat_oli") == "blue"
    assert role_of("B2", "landsat_tm") == "green"
    assert role_of("SR_B5", "landsat_oli") == "nir"
    assert role_of("B8A", "sentinel2") == "nir08"
    assert role_of("Near Infrared", None) == "nir"
    assert detect_sensor("LC81070352015122LGN00_B2B3B4_150m.tif") == "landsat_oli"
    assert detect_sensor("LE07_L1TP_042034_20170815_T1.tif") == "landsat_tm"
    assert detect_sensor("S2A_18SVG_20160112_L1C.tif") == "sentinel2"


def test_explicit_bands_override_mapping(s2_scene):
    scene = open_scene(s2_scene, roles=("red", "green", "blue"), bands=(3, 2, 1))
    assert scene.band_indexes == (3, 2, 1)
    with pytest.raises(BandMappingError, match="out of range"):
        open_scene(s2_scene, roles=("red", "green", "blue"), bands=(3, 2, 9))
    with pytest.raises(BandMappingError, match="--bands gives 2"):
        open_scene(s2_scene, roles=("red", "green", "blue"), bands=(3, 2))


def test_too_few_bands_names_roles_and_bands(collar_scene):
    with pytest.raises(BandMappingError) as err:
        open_scene(collar_scene, roles=RGBN)
    text = str(err.value)
    assert "nir" in text and "B2(blue)" in text and "--bands" in text


def test_missing_crs_is_refused_unless_allowed(nocrs_scene):
    with pytest.raises(GeoreferenceError, match="no CRS"):
        open_scene(nocrs_scene, roles=RGBN)
    scene = open_scene(nocrs_scene, roles=RGBN, allow_ungeoreferenced=True)
    assert not scene.georeferenced and scene.crs is None


def test_zero_byte_non_raster_and_missing_files(tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    for path, match in ((empty, "empty"), (text, "not a raster"), (tmp_path / "nope.tif", "does not exist")):
        with pytest.raises(SceneReadError, match=match) as err:
            open_scene(path)
        assert str(err.value).startswith(str(path))


def test_truncated_file_fails_in_preflight(s2_scene, tmp_path):
    cog = tmp_path / "truncated.tif"
    rasterio.shutil.copy(s2_scene, cog, driver="COG", blocksize=128)
    with open(cog, "r+b") as f:
        f.truncate(int(os.path.getsize(cog) * 0.6))
    scene = open_scene(cog, roles=RGBN)  # the header is intact: it opens
    with pytest.raises(SceneReadError, match="truncated or corrupt"):
        preflight(scene)
    # the light preflight finds it from the block index alone, without decoding a pixel
    with pytest.raises(SceneReadError, match=r"truncated or corrupt file: block \d+,\d+ of band \d ends at byte"):
        check_blocks(scene)
    with pytest.raises(SceneReadError, match="truncated or corrupt"):
        light_preflight(scene)


def test_block_index_check_passes_intact_files_and_defers_on_vrts(s2_scene, tmp_path):
    assert check_blocks(open_scene(s2_scene, roles=RGBN))
    vrt = tmp_path / "scene.vrt"
    rasterio.shutil.copy(s2_scene, vrt, driver="VRT")
    assert not check_blocks(open_scene(vrt, roles=RGBN))  # no block index: the full read decides


@pytest.mark.parametrize("name", ["s2_scene", "klamath_scene", "collar_scene"])
def test_light_preflight_samples_like_the_full_read(name, request, monkeypatch):
    import eoseg.scene as scene_module

    scene = open_scene(request.getfixturevalue(name))
    full = preflight(scene)

    def no_full_read(scene):
        raise AssertionError("an intact GeoTIFF with valid pixels in the sample is not decoded block by block")

    monkeypatch.setattr(scene_module, "preflight", no_full_read)
    light = light_preflight(scene)
    assert 0 < light.valid_fraction <= 1  # the sample's (predict counts the scene's valid pixels as it reads)
    # the sample's 98th percentiles serve the units check (reflectance vs × 10000): the same order of magnitude
    ratio = np.array(light.p98) / np.array(full.p98)
    assert np.all((ratio > 0.5) & (ratio < 2.0))


def test_light_preflight_reads_everything_when_the_sample_has_no_valid_pixel(s2_scene, tmp_path):
    with rasterio.open(s2_scene) as ds:
        profile, data = ds.profile | {"nodata": 0}, ds.read()
    islet = np.zeros_like(data)
    islet[:, 130:134, 300:304] = data[:, 130:134, 300:304]  # valid only outside the sampled window
    path = tmp_path / "islet.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(islet)
    scene = open_scene(path, roles=RGBN, bands=(1, 2, 3, 4))
    assert sampled_stats(scene) is None
    stats = light_preflight(scene)
    assert stats.valid_fraction == pytest.approx(16 / (scene.width * scene.height))
    empty = tmp_path / "empty.tif"
    with rasterio.open(empty, "w", **profile) as dst:
        dst.write(np.zeros_like(data))
    with pytest.raises(EmptySceneError):
        light_preflight(open_scene(empty, roles=RGBN, bands=(1, 2, 3, 4)))


def test_inf_nodata_and_nan_are_invalid(klamath_scene, tmp_path):
    scene = open_scene(klamath_scene, roles=RGBN)
    data, valid = read_window(scene, Window(0, 0, scene.width, scene.height))
    with rasterio.open(klamath_scene) as ds:
        raw = ds.read(1)
    assert not valid[np.isinf(raw)].any() and valid.any()
    assert np.isfinite(data).all()

    def add_nan(a):
        a = a.copy()
        a[:, :30, :40] = np.nan
        a[np.isinf(a)] = np.nan
        return a

    nan_file = rewrite(klamath_scene, tmp_path / "nan_ms.tif", add_nan, nodata=np.nan)
    scene = open_scene(nan_file, roles=RGBN)
    _, valid = read_window(scene, Window(0, 0, scene.width, scene.height))
    assert not valid[:30, :40].any()
    stats = preflight(scene)
    assert all(np.isfinite(stats.mean)) and 0 < stats.valid_fraction < 1


def test_rotated_collar_statistics_exclude_nodata(collar_scene):
    scene = open_scene(collar_scene, roles=("blue", "green", "red"))
    stats = preflight(scene)
    with rasterio.open(collar_scene) as ds:
        raw = ds.read()
    valid = (raw != 0).all(axis=0)  # a pixel is valid when every band is
    assert 0.2 < stats.valid_fraction < 0.8
    assert stats.valid_fraction == pytest.approx(valid.mean())
    assert stats.mean[0] == pytest.approx(raw[0][valid].mean(), rel=0.02)


def test_all_nodata_scene_is_refused(s2_scene, tmp_path):
    path = rewrite(s2_scene, tmp_path / "blank.tif", lambda a: np.zeros_like(a))
    scene = open_scene(path, roles=RGBN)
    with pytest.raises(EmptySceneError, match="no valid pixels"):
        preflight(scene)


def test_geographic_crs_opens(s2_scene, tmp_path):
    from rasterio.warp import calculate_default_transform, reproject

    dst = tmp_path / "wgs84.tif"
    with rasterio.open(s2_scene) as src:
        transform, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = src.profile | {"crs": "EPSG:4326", "transform": transform, "width": w, "height": h}
        with rasterio.open(dst, "w", **profile) as out:
            for b in range(1, src.count + 1):
                reproject(rasterio.band(src, b), rasterio.band(out, b))
            out.descriptions = src.descriptions
    scene = open_scene(dst, roles=RGBN)
    assert scene.crs.is_geographic and preflight(scene).valid_fraction > 0.5


def test_read_window_pads_by_reflection_and_marks_padding_invalid(s2_scene, tmp_path):
    small = tmp_path / "small.tif"
    shutil.copy(s2_scene, small)
    scene = open_scene(small, roles=RGBN)
    data, valid = read_window(scene, Window(0, 0, 53, 37), pad=(27, 11))
    assert data.shape == (4, 64, 64) and valid.shape == (64, 64)
    assert valid[:37, :53].all() and not valid[37:].any() and not valid[:, 53:].any()
    np.testing.assert_array_equal(data[:, 37, :53], data[:, 35, :53])  # reflected row


def write_bands(path, descriptions, colorinterp=None, crs="EPSG:32618"):
    profile = dict(driver="GTiff", width=16, height=16, count=len(descriptions), dtype="uint16", crs=crs,
                   transform=rasterio.transform.from_origin(400000, 4100000, 10, 10))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.ones((len(descriptions), 16, 16), np.uint16))
        ds.descriptions = descriptions
        if colorinterp:
            ds.colorinterp = colorinterp
    return path


def test_bare_band_numbers_without_a_sensor_are_unknown(tmp_path):
    """An R, G, B, NIR export with bands named B1..B4 must not be read with Landsat 8 numbering (B4 = red)."""
    export = write_bands(tmp_path / "export.tif", ("B1", "B2", "B3", "B4"))
    with pytest.raises(BandMappingError, match="--bands"):
        open_scene(export, roles=("red", "green", "blue"))
    assert role_of("B4", None) is None and role_of("band_1", None) is None
    from rasterio.enums import ColorInterp as CI

    coloured = write_bands(tmp_path / "coloured.tif", ("band_1", "band_2", "band_3", "band_4"),
                           colorinterp=[CI.red, CI.green, CI.blue, CI.undefined])
    assert open_scene(coloured, roles=("red", "green", "blue")).band_indexes == (1, 2, 3)
    landsat = write_bands(tmp_path / "LC08_L1TP_042034_20200821_export.tif", ("B1", "B2", "B3", "B4"))
    assert open_scene(landsat, roles=("red", "green", "blue")).band_indexes == (4, 3, 2)


def test_chosen_mapping_is_carried_and_logged(s2_scene, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="eoseg.scene"):
        scene = open_scene(s2_scene, roles=("red", "green", "blue"))
    assert scene.band_descriptions == ("B04", "B03", "B02")
    assert scene.band_mapping[0] == {"role": "red", "band": 3, "description": "B04"}
    assert "red=3:B04 green=2:B03 blue=1:B02" in caplog.text


def test_local_crs_without_datum_is_refused_at_open(tmp_path):
    local = ('LOCAL_CS["site grid",LOCAL_DATUM["site",32767],UNIT["metre",1],'
             'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    path = write_bands(tmp_path / "local.tif", ("red", "green", "blue"), crs=rasterio.crs.CRS.from_wkt(local))
    with rasterio.open(path) as ds:
        assert ds.crs is not None  # GDAL kept the local CRS
    with pytest.raises(GeoreferenceError, match="local .*without a datum.*--allow-ungeoreferenced"):
        open_scene(path, roles=("red", "green", "blue"))
    scene = open_scene(path, roles=("red", "green", "blue"), allow_ungeoreferenced=True)
    assert scene.crs is None and not scene.georeferenced


@pytest.mark.parametrize("name, nir, swir1, swir2", [
    ("LT04_L1TP_042034_19890821_T1.tif", "B4", "B5", "B7"),
    ("LT05_L2SP_042034_20000821_20200905_02_T1.tif", "SR_B4", "SR_B5", "SR_B7"),
    ("LE07_L1TP_042034_20170815_T1.tif", "B4", "B5", "B7"),
    ("LC08_L1TP_042034_20200821_T1.tif", "B5", "B6", "B7"),
    ("LC09_L2SP_042034_20220821_20220905_02_T1.tif", "SR_B5", "SR_B6", "SR_B7"),
    ("S2B_MSIL2A_20230110T155509_N0509_R011_T18SVG.tif", "B08", "B11", "B12"),
])
def test_five_band_roles_for_landsat_4_to_9_and_sentinel2(name, nir, swir1, swir2):
    sensor = detect_sensor(name)
    assert (role_of(nir, sensor), role_of(swir1, sensor), role_of(swir2, sensor)) == ("nir", "swir1", "swir2")


def test_preflight_fallback_samples_strip_by_strip(s2_scene, tmp_path, monkeypatch):
    """Valid pixels only on odd columns, sample points only on even ones: the fallback takes every k-th valid
    pixel, reading strips (never the whole scene at once) and keeping at most max_samples of them."""

    def odd_columns(data):
        data[:, :, ::2] = 0  # nodata
        return data

    scene = open_scene(rewrite(s2_scene, tmp_path / "odd.tif", odd_columns))
    max_samples = scene.width * scene.height // 4  # step 2: sample points on even rows and columns
    heights = []
    real_read = SceneReader.read

    def read(self, window, pad=(0, 0)):
        heights.append(int(window.height))
        return real_read(self, window, pad)

    monkeypatch.setattr(SceneReader, "read", read)
    monkeypatch.setattr(SceneReader, "strips", functools.partialmethod(SceneReader.strips, rows=16))
    stats = preflight(scene, max_samples=max_samples)
    assert max(heights) == 16
    with rasterio.open(s2_scene) as ds:
        values = ds.read()[:, :, 1::2].astype(np.float64)
    valid = (values != 0).all(axis=0)
    ordered = values.transpose(1, 2, 0)[valid]  # valid pixels in reading order (row by row)
    k = math.ceil(valid.sum() / max_samples)
    assert k == 2
    np.testing.assert_allclose(stats.mean, ordered[::k].mean(axis=0), rtol=1e-6)


def test_gdal_masks_are_read_only_when_they_say_more_than_nodata(s2_scene, tmp_path, monkeypatch):
    """A scene whose masks only restate its nodata value is not tested twice (GDAL's nodata mask would compare
    every decoded value again); a per-band nodata of its own or an internal mask band is still honoured."""
    whole = Window(0, 0, 320, 256)

    def holes(a):
        a = a.copy()
        a[:, 100:120, 200:260] = 0  # the nodata value
        return a

    source = rewrite(s2_scene, tmp_path / "holes.tif", holes)
    scene = open_scene(source, roles=RGBN)
    with rasterio.open(source) as ds:
        expected = (ds.read_masks([1, 2, 3, 4]) > 0).all(axis=0)
        assert set(ds.mask_flag_enums[0]) == {rasterio.enums.MaskFlags.nodata}
    calls = []
    original = rasterio.io.DatasetReader.read_masks
    monkeypatch.setattr(rasterio.io.DatasetReader, "read_masks",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    _, valid = read_window(scene, whole)
    assert calls == [] and (valid == expected).all() and 0 < valid.mean() < 1

    masked = tmp_path / "masked.tif"
    shutil.copy(source, masked)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(masked, "r+") as ds:
        mask = np.full((ds.height, ds.width), 255, np.uint8)
        mask[:40, :50] = 0  # valid values, masked out by the mask band
        ds.write_mask(mask)
    _, valid = read_window(open_scene(masked, roles=RGBN), whole)
    assert calls and not valid[:40, :50].any() and (valid[40:] == expected[40:]).all()
