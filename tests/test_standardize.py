"""Standardization: the percentile ``stretch`` mode (values, clipping, constant bands) and the nodata fill."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio

from eoseg.predict import predict_scene
from eoseg.standardize import STRETCH_RANGE, Standardization, fill_invalid


def _stretch(**kwargs) -> Standardization:
    return Standardization("stretch").with_stats(low=[100.0, 0.0], high=[300.0, 0.5], **kwargs)


def test_stretch_maps_the_percentiles_to_0_and_1():
    x = np.array([100, 150, 200, 300], np.float32).reshape(1, 1, 4).repeat(2, axis=0)
    x[1] = [0.0, 0.125, 0.25, 0.5]
    out = _stretch().apply(x)
    np.testing.assert_allclose(out, np.tile([0.0, 0.25, 0.5, 1.0], (2, 1, 1)), atol=1e-7)
    assert out.dtype == np.float32


def test_stretch_then_the_stored_zscore():
    std = Standardization("stretch", mean=(0.5, 0.25), std=(0.25, 0.5)).with_stats(low=[100, 0], high=[300, 0.5])
    x = np.array([[[200.0]], [[0.5]]], np.float32)
    np.testing.assert_allclose(std.apply(x)[:, 0, 0], [(0.5 - 0.5) / 0.25, (1.0 - 0.25) / 0.5])


def test_stretch_clips_glint_and_shadow_to_the_training_range():
    """A cloud 40 spreads above p98 must not reach the model as 40: it is clipped to the top of the range."""
    x = np.array([[[8100.0, -5000.0, 250.0]], [[0.5, 0.5, 0.5]]], np.float32)
    out = _stretch().apply(x)
    assert STRETCH_RANGE == (-0.5, 1.5)
    np.testing.assert_allclose(out[0, 0], [1.5, -0.5, 0.75])
    with_zscore = Standardization("stretch", mean=(0.5, 0.5), std=(0.25, 0.25)).with_stats(
        low=[100, 0], high=[300, 0.5]).apply(x)
    np.testing.assert_allclose(with_zscore[0, 0, :2], [(1.5 - 0.5) / 0.25, (-0.5 - 0.5) / 0.25])


def test_constant_band_is_fed_as_zero_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="eoseg.standardize"):
        std = Standardization("stretch").with_stats(low=[100.0, 7.0], high=[300.0, 7.0], names=["red", "nir"])
        x = np.array([[[100.0, 300.0]], [[7.0, 7.5]]], np.float32)
        for _ in range(3):  # applied to every tile: no more warnings
            out = std.apply(x)
    np.testing.assert_allclose(out, [[[0.0, 1.0]], [[0.0, 0.0]]])  # not (7.5 - 7) / 1e-6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "nir = 7" in warnings[0].getMessage()
    assert "red" not in warnings[0].getMessage()


def test_stretch_without_names_counts_bands_from_one(caplog):
    with caplog.at_level(logging.WARNING, logger="eoseg.standardize"):
        Standardization("stretch").with_stats(low=[0.0, 3.0, 1.0], high=[0.0, 4.0, 1.0])
    assert "band 1 = 0, band 3 = 1" in caplog.text


def test_infinite_nodata_stays_zero_in_a_constant_band():
    std = Standardization("stretch").with_stats(low=[5.0], high=[5.0])
    x = np.array([[[5.0, -np.inf]]], np.float32)
    out = std.apply(x, valid=np.array([[True, False]]))
    np.testing.assert_array_equal(out, [[[0.0, 0.0]]])


@pytest.fixture
def constant_nir_scene(s2_scene, tmp_path):
    """The Sentinel-2 crop with B08 (band 4) set to one value, as a saturated or zero-filled band would be."""
    path = tmp_path / "constant_nir.tif"
    with rasterio.open(s2_scene) as src:
        data = src.read()
        profile = src.profile
        descriptions = src.descriptions
    data[3] = 1234
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
    return path


def test_predict_warns_once_per_scene_naming_the_band(constant_nir_scene, bundle_factory, tmp_path, caplog):
    bundle = bundle_factory(tmp_path / "stretch", mode="stretch")
    with caplog.at_level(logging.WARNING, logger="eoseg"):
        result = predict_scene(constant_nir_scene, bundle, tmp_path / "out", precision="fp32")
    warnings = [r.getMessage() for r in caplog.records if "constant band" in r.getMessage()]
    assert result.tiles == 9 and len(warnings) == 1
    assert "nir (band 4) = 1234" in warnings[0]


def test_invalid_pixels_take_the_nearest_valid_pixels_value():
    x = np.arange(2 * 1 * 5, dtype=np.float32).reshape(2, 1, 5)
    valid = np.array([[False, False, False, True, True]])  # a collar over the left part of a row
    out = fill_invalid(x.copy(), valid)
    np.testing.assert_array_equal(out[:, 0, 3:], x[:, 0, 3:])  # valid pixels untouched
    np.testing.assert_array_equal(out[:, 0, :3], np.repeat(x[:, 0, 3:4], 3, axis=1))
    # in 2-D each filled value comes from the collar's edge (a valid pixel beside the collar)
    x2 = np.random.default_rng(0).random((1, 6, 6), np.float32)
    valid2 = np.add.outer(np.arange(6), np.arange(6)) >= 5
    out2 = fill_invalid(x2.copy(), valid2)
    edge = valid2 & (np.add.outer(np.arange(6), np.arange(6)) <= 6)
    assert set(out2[0][~valid2].tolist()) <= set(x2[0][edge].tolist())


def test_a_tile_with_no_valid_pixel_is_the_mean():
    x = np.full((1, 2, 2), 7.0, np.float32)
    out = Standardization("fixed", mean=(7.0,), std=(1.0,)).apply(x, np.zeros((2, 2), bool))
    np.testing.assert_array_equal(out, 0.0)


def test_apply_fills_and_transform_leaves_zeros():
    std = Standardization("fixed", mean=(1.0,), std=(2.0,))
    x = np.array([[[5.0, -9999.0]]], np.float32)
    valid = np.array([[True, False]])
    np.testing.assert_array_equal(std.transform(x, valid), [[[2.0, 0.0]]])
    np.testing.assert_array_equal(std.apply(x, valid), [[[2.0, 2.0]]])
