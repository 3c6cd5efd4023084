"""Reflectance scaling for each kind of product, decided from what the file and its metadata say."""

import math
import shutil

import numpy as np
import pytest
import rasterio

from eoseg.errors import ScalingError
from eoseg.radiometry import Scaling, find_mtl, read_mtl, scene_scaling, sentinel2_offset
from eoseg.scene import open_scene
from eoseg.standardize import Standardization

FIVE = ("blue", "green", "red", "nir", "swir1")
SUN_ELEVATION = 64.74360932  # LC80200392015216LGN00_MTL.txt


def write_tiny(path, dtype="uint16", descriptions=("B02", "B03", "B04", "B08", "B11"), tags=None, band_tags=None,
               scales=None, offsets=None):
    """A 5-band 8 × 8 GeoTIFF with chosen band names and metadata."""
    data = (np.arange(len(descriptions) * 64).reshape(len(descriptions), 8, 8) * 10 + 1000).astype(dtype)
    profile = dict(driver="GTiff", width=8, height=8, count=len(descriptions), dtype=dtype, crs="EPSG:32618",
                   transform=rasterio.transform.from_origin(400000, 4100000, 10, 10))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.descriptions = descriptions
        ds.update_tags(**(tags or {}))
        for i, bt in enumerate(band_tags or (), start=1):
            ds.update_tags(i, **bt)
        if scales is not None:
            ds.scales = scales
        if offsets is not None:
            ds.offsets = offsets
    return path


def scaling_of(path, roles=FIVE, **kwargs):
    return scene_scaling(open_scene(path, roles=roles), **kwargs)


def test_sentinel2_digital_numbers_without_baseline(s2_scene):
    s = scaling_of(s2_scene)
    assert s.source == "sentinel2"
    assert s.scale == pytest.approx((1e-4,) * 5) and s.offset == (0.0,) * 5


def test_plain_geotiff_with_sentinel2_band_names(tmp_path):
    s = scaling_of(write_tiny(tmp_path / "scene.tif"))  # no sensor in the name: the B02 codes say Sentinel-2
    assert s.source == "sentinel2" and s.scale == pytest.approx((1e-4,) * 5)


@pytest.mark.parametrize("tags, expected", [
    ({"PROCESSING_BASELINE": "04.00"}, -0.1),
    ({"PROCESSING_BASELINE": "03.01"}, 0.0),
    ({"BOA_ADD_OFFSET": "-1000"}, -0.1),
    ({"RADIO_ADD_OFFSET": "-1000"}, -0.1),
    ({"PRODUCT_URI": "S2B_MSIL2A_20230110T155509_N0509_R011_T18SVG_20230110T192041.SAFE"}, -0.1),
    ({"PRODUCT_URI": "S2A_MSIL1C_20160112T155622_N0201_R011_T18SVG_20160112T155619.SAFE"}, 0.0),
])
def test_sentinel2_offset_from_processing_baseline(tmp_path, tags, expected):
    s = scaling_of(write_tiny(tmp_path / "scene.tif", tags=tags))
    assert s.source == "sentinel2"
    assert s.offset == pytest.approx((expected,) * 5)
    # 1000 DN is reflectance 0 from baseline 04.00 on
    assert s.apply(np.full((5, 1, 1), 1000.0))[:, 0, 0] == pytest.approx([0.1 + expected] * 5, abs=1e-6)


def test_sentinel2_per_band_offset_tags(tmp_path):
    offsets = [{"BOA_ADD_OFFSET": str(-1000 - i)} for i in range(5)]
    s = scaling_of(write_tiny(tmp_path / "scene.tif", band_tags=offsets))
    assert s.offset == pytest.approx(tuple((-1000 - i) / 1e4 for i in range(5)))
    assert sentinel2_offset({}, [{}], "S2A_MSIL1C_N0400_")[0] == -1000.0


def test_landsat_collection2_level2_surface_reflectance(tmp_path):
    sr = write_tiny(tmp_path / "scene.tif", descriptions=("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6"),
                    tags={"SPACECRAFT": "LANDSAT_8"})
    named = write_tiny(tmp_path / "LC08_L2SP_042034_20200821_20200905_02_T1_SR.tif",
                       descriptions=("B2", "B3", "B4", "B5", "B6"))
    for path in (sr, named):
        s = scaling_of(path)
        assert s.source == "landsat-c2-l2"
        assert s.scale == pytest.approx((2.75e-5,) * 5) and s.offset == pytest.approx((-0.2,) * 5)
    assert scaling_of(named).apply(np.full((5, 1, 1), 10000.0))[:, 0, 0] == pytest.approx([0.075] * 5)


def test_landsat_level1_with_mtl(data_dir):
    scene = data_dir / "LC80200392015216LGN00_l1_crop.tif"
    assert find_mtl(scene) == data_dir / "LC80200392015216LGN00_MTL.txt"
    s = scaling_of(scene)
    sin = math.sin(math.radians(SUN_ELEVATION))
    assert s.source == "landsat-l1-mtl"
    assert s.scale == pytest.approx((2e-5 / sin,) * 5) and s.offset == pytest.approx((-0.1 / sin,) * 5)
    # the bands are B2..B6 of the file (band indexes 2..6), not B1..B5
    assert open_scene(scene, roles=FIVE).band_indexes == (2, 3, 4, 5, 6)
    with rasterio.open(scene) as ds:
        dn = ds.read(4).astype(np.float64)  # red
    red = s.apply(np.stack([dn] * 5))[2]
    assert red == pytest.approx((dn * 2e-5 - 0.1) / sin, rel=1e-5)
    assert 0.0 < float(np.median(red)) < 0.6


def test_level1_mtl_of_another_product_is_not_used(data_dir, tmp_path):
    shutil.copy(data_dir / "LC80200392015216LGN00_l1_crop.tif", tmp_path / "LC80200392015216LGN00_l1_crop.tif")
    shutil.copy(data_dir / "LC80200392015216LGN00_MTL.txt", tmp_path / "LC81070352015122LGN00_MTL.txt")
    with pytest.raises(ScalingError, match="pass --scale and --offset"):
        scaling_of(tmp_path / "LC80200392015216LGN00_l1_crop.tif")


def test_mtl_groups_keep_level1_and_level2_apart(tmp_path):
    mtl = tmp_path / "X_MTL.txt"
    mtl.write_text('GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\n  REFLECTANCE_MULT_BAND_1 = 2.75E-05\n'
                   'END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\nGROUP = LEVEL1_RADIOMETRIC_RESCALING\n'
                   '  REFLECTANCE_MULT_BAND_1 = 2.0E-05\nEND_GROUP = LEVEL1_RADIOMETRIC_RESCALING\n'
                   'PROCESSING_LEVEL = "L2SP"\n')
    values = read_mtl(mtl)
    assert values["REFLECTANCE_MULT_BAND_1"] == "2.0E-05" and values["L2:REFLECTANCE_MULT_BAND_1"] == "2.75E-05"
    assert values["PROCESSING_LEVEL"] == "L2SP"


def test_float_data_is_reflectance_as_it_is(klamath_scene):
    s = scaling_of(klamath_scene)
    assert s.source == "float" and s.scale == (1.0,) * 5 and s.offset == (0.0,) * 5


def test_band_scale_offset_metadata(tmp_path):
    path = write_tiny(tmp_path / "scene.tif", descriptions=("blue", "green", "red", "nir", "swir1"),
                      scales=[2e-4] * 5, offsets=[-0.05] * 5)
    s = scaling_of(path)
    assert s.source == "band-metadata" and s.scale == pytest.approx((2e-4,) * 5)


def test_integer_data_without_evidence_is_refused(collar_scene, tmp_path):
    with pytest.raises(ScalingError, match="cannot tell the units.*pass --scale and --offset"):
        scaling_of(collar_scene, roles=("red", "green", "blue"))
    plain = write_tiny(tmp_path / "export.tif", descriptions=("blue", "green", "red", "nir", "swir1"))
    with pytest.raises(ScalingError, match="uint16"):
        scaling_of(plain)


def test_user_scale_and_offset_override_the_guess(s2_scene, collar_scene):
    s = scaling_of(s2_scene, scale=2e-5, offset=-0.1)
    assert s.source == "user" and s.scale == (2e-5,) * 5 and s.offset == (-0.1,) * 5
    assert scaling_of(collar_scene, roles=("red", "green", "blue"), scale=1e-4).offset == (0.0,) * 3
    with pytest.raises(ScalingError, match="one per band"):
        scaling_of(s2_scene, scale=[1e-4, 1e-4])


def test_reflectance_standardization_clips_then_scores():
    scaling = Scaling((1e-4,) * 2, (0.0,) * 2, "sentinel2", "")
    std = Standardization("reflectance", mean=(0.1, 0.2), std=(0.05, 0.1)).with_scaling(scaling)
    x = np.array([[[1000.0, 30000.0]], [[2000.0, -5000.0]]], np.float32)
    out = std.apply(x)
    assert out[:, 0, 0] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert out[0, 0, 1] == pytest.approx((1.5 - 0.1) / 0.05)  # 3.0 clipped to 1.5
    assert out[1, 0, 1] == pytest.approx((-0.1 - 0.2) / 0.1)  # -0.5 clipped to -0.1
    assert Standardization.from_dict(std.to_dict()) == std
    with pytest.raises(Exception, match="no scaling"):
        Standardization("reflectance", mean=(0.1, 0.2), std=(0.05, 0.1)).apply(x)


def test_log_reflectance_takes_the_log_of_the_clipped_reflectance_then_scores():
    """``ln(max(r, 0) + 0.01)``: negative reflectance (dark water after the L2 offset) is floored at 0, and the
    offset is recorded so a card read back transforms alike."""
    scaling = Scaling((1e-4,) * 2, (0.0,) * 2, "sentinel2", "")
    std = Standardization("log-reflectance", mean=(-2.0, -3.0), std=(0.5, 1.0)).with_scaling(scaling)
    x = np.array([[[1000.0, 30000.0]], [[60.0, -500.0]]], np.float32)
    out = std.apply(x)
    assert out[0, 0, 0] == pytest.approx((np.log(0.11) + 2.0) / 0.5, rel=1e-5)
    assert out[0, 0, 1] == pytest.approx((np.log(1.51) + 2.0) / 0.5, rel=1e-5)  # clipped to 1.5 first
    assert out[1, 0, 0] == pytest.approx(np.log(0.016) + 3.0, rel=1e-5)
    assert out[1, 0, 1] == pytest.approx(np.log(0.01) + 3.0, rel=1e-5)  # -0.05 floored at 0
    assert std.needs_scaling and std.to_dict()["log_offset"] == 0.01
    assert Standardization.from_dict(std.to_dict()) == std
    assert "log_offset" not in Standardization("reflectance", mean=(0.1,), std=(0.1,)).to_dict()


def test_wrong_units_are_warned_about(caplog):
    import logging

    from eoseg.radiometry import check_reflectance_range

    float_dn = Scaling((1.0,) * 2, (0.0,) * 2, "float", "")
    with caplog.at_level(logging.WARNING, logger="eoseg.radiometry"):
        check_reflectance_range(float_dn, [0.3, 0.4], "ok.tif")
        assert caplog.text == ""
        check_reflectance_range(float_dn, [3000.0, 4000.0], "dn.tif")
    assert "dn.tif" in caplog.text and "above reflectance" in caplog.text


def test_recent_sentinel2_without_baseline_is_warned_about(tmp_path, caplog):
    import logging

    old = write_tiny(tmp_path / "S2A_20160112_scene.tif")
    new = write_tiny(tmp_path / "S2A_2023-07-01_scene.tif")
    with caplog.at_level(logging.WARNING, logger="eoseg.radiometry"):
        scaling_of(old)
        assert "baseline" not in caplog.text
        assert scaling_of(new).offset == (0.0,) * 5
    assert "--offset -0.1" in caplog.text
