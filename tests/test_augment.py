"""Augmentation keeps image and label aligned, fills the outside with ignore, and is seeded."""

import math

import pytest
import torch

from eoseg.augment import Augmenter, warp
from eoseg.config import AugmentConfig
from eoseg.standardize import ReflectanceSpace


def blocks(n: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels in 16 × 16 blocks of classes 0..3; the image's 2 channels encode the label (as float)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    label = ((yy // 16) + (xx // 16)) % 4
    y = label.expand(n, size, size).clone()
    x = torch.stack([y.float(), -y.float()], dim=1)
    return x, y


def agreement(x: torch.Tensor, y: torch.Tensor) -> float:
    keep = y != 255
    return float((x[:, 0].round()[keep] == y[keep].float()).float().mean())


def test_flips_and_rot90_exactly_aligned():
    x, y = blocks()
    cfg = AugmentConfig(hflip=True, vflip=True, rot90=True, rotation=0, shift=0, zoom=0)
    xa, ya = Augmenter(cfg, seed=3)(x, y)
    assert torch.equal(xa[:, 0].long(), ya) and torch.equal(xa[:, 1], -xa[:, 0])
    assert not torch.equal(ya, y)  # something changed


def test_affine_keeps_alignment_and_marks_outside_ignored():
    x, y = blocks(8)
    cfg = AugmentConfig(hflip=True, rotation=20, shift=0.1, zoom=0.1)
    xa, ya = Augmenter(cfg, seed=0)(x, y)
    assert (ya == 255).any()  # shifted / rotated in from outside
    assert set(torch.unique(ya).tolist()) <= {0, 1, 2, 3, 255}  # nearest: no new label values
    assert agreement(xa, ya) > 0.95  # bilinear image vs nearest label differ only along block edges


def test_pure_shift_by_hand():
    x, y = blocks(1)
    theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # sample 16 px to the right (0.5 of half-width 32)
    xa, ya = warp(x, y, theta)
    assert torch.equal(ya[0, :, :48], y[0, :, 16:])
    assert (ya[0, :, 48:] == 255).all()
    assert torch.allclose(xa[0, 0, :, :48], x[0, 0, :, 16:], atol=1e-4)


def test_rotation_by_90_degrees_matches_rot90():
    x, y = blocks(1)
    a = math.radians(90)
    theta = torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]])
    _, ya = warp(x, y, theta)
    assert torch.equal(ya[0], torch.rot90(y[0], 1, dims=(0, 1))) or torch.equal(ya[0], torch.rot90(y[0], -1, (0, 1)))


def test_seeded_and_photometric_leaves_labels():
    x, y = blocks()
    cfg = AugmentConfig(rotation=10, shift=0.05, zoom=0.05, brightness=0.2, contrast=0.2)
    a1, b1 = Augmenter(cfg, seed=7)(x, y)
    a2, b2 = Augmenter(cfg, seed=7)(x, y)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    only_photo = AugmentConfig(hflip=False, rotation=0, shift=0, zoom=0, brightness=0.5, contrast=0.5)
    xp, yp = Augmenter(only_photo, seed=1)(x, y)
    assert torch.equal(yp, y) and not torch.equal(xp, x)


def test_disabled_is_identity_and_inputs_untouched():
    x, y = blocks()
    x0, y0 = x.clone(), y.clone()
    xa, ya = Augmenter(AugmentConfig(enabled=False))(x, y)
    assert xa is x and ya is y
    Augmenter(AugmentConfig(rotation=30))(x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize("bad", [{"rotation": -1}, {"shift": 1.5}, {"rotatoin": 5}])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_per_band_jitter_shifts_bands_independently():
    x = torch.zeros(2, 4, 8, 8)
    y = torch.ones(2, 8, 8, dtype=torch.long)
    common = dict(hflip=False, rotation=0, shift=0, zoom=0, brightness=0.8, contrast=0.0)
    xa, ya = Augmenter(AugmentConfig(**common, per_band=True), seed=3)(x, y)
    shifts = xa[:, :, 0, 0]
    assert torch.equal(ya, y)
    assert (xa == shifts[:, :, None, None]).all()  # one shift per image and band, constant over pixels
    assert (shifts.std(dim=1) > 0).all() and shifts.abs().max() <= 0.8
    xs, _ = Augmenter(AugmentConfig(**common, per_band=False), seed=3)(x, y)
    assert (xs[:, :, 0, 0].std(dim=1) == 0).all()  # the default shifts all bands alike


def test_coarsen_averages_blocks_and_keeps_size():
    from eoseg.augment import coarsen

    x = torch.zeros(1, 1, 8, 8)
    x[..., ::2, ::2] = 4.0  # a 2 × 2 checker: one bright pixel in each 2 × 2 block
    out = coarsen(x, 2.0)
    assert out.shape == x.shape
    assert torch.allclose(out, torch.ones_like(out))  # block means are 1 everywhere, bilinear keeps a constant
    assert torch.equal(coarsen(x, 1.0), x)


def test_resolution_fraction_keeps_the_other_samples_sharp():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 2, 16, 16, generator=g)
    y = torch.zeros(64, 16, 16, dtype=torch.long)
    plain = dict(hflip=False, rotation=0, shift=0, zoom=0, resolution=2.0)
    xa, _ = Augmenter(AugmentConfig(**plain, resolution_fraction=0.5), seed=4)(x, y)
    same = torch.tensor([torch.equal(a, b) for a, b in zip(xa, x, strict=True)])
    assert 16 < int(same.sum()) < 48  # about half kept at their native pixels, the rest blurred
    assert (xa[~same].std(dim=(2, 3)) < x[~same].std(dim=(2, 3))).all()
    xn, _ = Augmenter(AugmentConfig(**plain, resolution_fraction=0.0), seed=4)(x, y)
    assert torch.equal(xn, x)


def test_resolution_and_haze_change_images_not_labels():
    x, y = blocks(4)
    x = torch.cat([x, x], dim=1)  # 4 bands
    cfg = AugmentConfig(hflip=False, rotation=0, shift=0, zoom=0, resolution=2.0, haze=0.5)
    xa, ya = Augmenter(cfg, seed=1)(x, y)
    assert torch.equal(ya, y)
    shift = (xa - Augmenter(AugmentConfig(hflip=False, rotation=0, shift=0, zoom=0, resolution=2.0),
                            seed=1)(x, y)[0]).mean(dim=(2, 3))
    # haze: positive, largest in the first band, falling to a fifth of it in the last
    assert (shift[:, 0] >= shift[:, -1]).all() and (shift >= 0).all() and (shift[:, 0] > 0).any()
    assert torch.allclose(shift[:, -1], shift[:, 0] * 0.2, atol=1e-4)


def test_gain_scales_reflectance_of_a_real_crop_by_one_factor_per_sample(klamath_scene):
    """Standardized Klamath reflectance, un-standardized after ``gain``: every band and pixel of a sample is
    its reflectance times the same factor, within [1 / 1.5, 1.5]; labels untouched."""
    import numpy as np
    import rasterio

    from eoseg.standardize import Standardization

    with rasterio.open(klamath_scene) as ds:
        refl = ds.read(indexes=[1, 2, 3, 4, 5], window=rasterio.windows.Window(40, 100, 64, 64)).astype(np.float32)
    assert np.isfinite(refl).all() and refl.min() > 0
    mean = refl.mean(axis=(1, 2)).astype(float)
    std = refl.std(axis=(1, 2)).astype(float)
    template = Standardization("reflectance", mean=tuple(mean), std=tuple(std))
    x = torch.from_numpy((refl - mean[:, None, None]) / std[:, None, None]).float().repeat(4, 1, 1, 1)
    y = torch.ones(4, 64, 64, dtype=torch.long)
    cfg = AugmentConfig(hflip=False, rotation=0, shift=0, zoom=0, gain=0.5)
    xa, ya = Augmenter(cfg, seed=2, space=template.reflectance_space)(x, y)
    back = xa.numpy() * std[None, :, None, None] + mean[None, :, None, None]
    _assert_one_gain_per_sample(back / refl[None], bound=1.5)
    assert torch.equal(ya, y)


def _assert_one_gain_per_sample(ratio, bound: float) -> None:
    import numpy as np

    factors = ratio.reshape(ratio.shape[0], -1)
    assert np.allclose(factors, factors[:, :1], rtol=1e-3)  # one factor per sample, all bands and pixels
    assert (factors[:, 0] >= 1 / bound - 1e-4).all() and (factors[:, 0] <= bound + 1e-4).all()
    assert factors[:, 0].std() > 0.01


def test_gain_in_log_reflectance_multiplies_the_reflectance_too(klamath_scene):
    """``log-reflectance``: the gain is applied to the reflectance behind ``ln(r + 0.01)``, not to the logarithm."""
    import numpy as np
    import rasterio

    from eoseg.standardize import LOG_OFFSET, Standardization, log_reflectance

    with rasterio.open(klamath_scene) as ds:
        refl = ds.read(indexes=[1, 2, 3, 4, 5], window=rasterio.windows.Window(40, 100, 64, 64)).astype(np.float32)
    logs = log_reflectance(refl)
    mean, std = logs.mean(axis=(1, 2)).astype(float), logs.std(axis=(1, 2)).astype(float)
    template = Standardization("log-reflectance", mean=tuple(mean), std=tuple(std))
    x = torch.from_numpy((logs - mean[:, None, None]) / std[:, None, None]).float().repeat(4, 1, 1, 1)
    y = torch.ones(4, 64, 64, dtype=torch.long)
    cfg = AugmentConfig(hflip=False, rotation=0, shift=0, zoom=0, gain=0.5)
    xa = Augmenter(cfg, seed=2, space=template.reflectance_space)(x, y)[0].double().numpy()
    back = np.exp(xa * std[None, :, None, None] + mean[None, :, None, None]) - LOG_OFFSET
    _assert_one_gain_per_sample(back / refl[None], bound=1.5)


def test_gain_needs_a_standardization_that_fixes_reflectance():
    from eoseg.errors import ConfigError
    from eoseg.standardize import Standardization

    assert Standardization("stretch").reflectance_space is None
    assert Standardization("log-reflectance", mean=(0.0,), std=(1.0,)).reflectance_space.log_offset == 0.01
    with pytest.raises(ConfigError, match="augment.gain"):
        Augmenter(AugmentConfig(gain=0.3), space=Standardization("image").reflectance_space)


def test_gain_classes_change_only_those_pixels_and_their_edge(klamath_scene):
    """``gain_classes``: the factor applies inside the class, blends over its edge, and leaves the rest alone."""
    import numpy as np
    import rasterio

    with rasterio.open(klamath_scene) as ds:
        refl = ds.read(indexes=[1, 2, 3, 4, 5], window=rasterio.windows.Window(40, 100, 64, 64))
    x = torch.from_numpy(refl.astype(np.float32))[None].repeat(2, 1, 1, 1)
    y = torch.full((2, 64, 64), 3, dtype=torch.long)
    y[:, 20:40, 10:30] = 2  # a "sand" square
    y[:, 0:5, :] = 255
    cfg = AugmentConfig(hflip=False, rotation=0, shift=0, zoom=0, gain=0.5, gain_classes=[2])
    space = ReflectanceSpace(mean=(0.0,) * 5, std=(1.0,) * 5)  # standardized = reflectance
    xa, ya = Augmenter(cfg, seed=5, space=space)(x, y)
    ratio = (xa / x).numpy()
    inner, outside = ratio[:, :, 21:39, 11:29], ratio[:, :, 42:, 32:]
    assert np.allclose(inner, inner[:, :1, :1, :1], rtol=1e-4) and (np.abs(inner[:, 0, 0, 0] - 1) > 0.01).all()
    assert np.allclose(outside, 1.0) and np.allclose(ratio[:, :, :5], 1.0)
    edge = ratio[:, 0, 30, 9]  # one pixel outside the square: a third of the way
    assert np.allclose(edge - 1, (inner[:, 0, 0, 0] - 1) / 3, rtol=1e-3) and torch.equal(ya, y)


def test_gain_on_a_band_with_zero_std_stays_finite():
    """A band constant in the training data (std 0) is standardized with std clamped to 1e-6; the gain maps
    through the same clamp instead of dividing by zero."""
    from eoseg.augment import gain_reflectance
    from eoseg.standardize import Standardization

    for mode in ("reflectance", "log-reflectance"):
        space = Standardization(mode, mean=(0.1, 0.2), std=(0.05, 0.0)).reflectance_space
        x = torch.zeros(1, 2, 4, 4)
        assert torch.isfinite(gain_reflectance(x, torch.tensor(1.5), space)).all()
