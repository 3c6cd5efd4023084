"""Online augmentation on batches: the same geometry for image and label, seeded.

Geometric transforms (applied per sample, identically to image and label):
- horizontal / vertical flips and 90° rotations (square tiles only);
- a small random affine as Segmentation Gym's Keras ``ImageDataGenerator`` (rotation ± degrees, shift
  ± fraction of the size, zoom ± fraction), resampled with ``grid_sample``: bilinear with reflection
  for the image, nearest for the label, and label pixels mapped from outside the tile set to ignore.
Surface albedo (image only): ``gain`` multiplies a sample's reflectance by one random factor, log-uniform in
[1 / (1 + gain), 1 + gain], for all bands: dark sand and gravel beaches (Klamath, Elwha) reflect half of what
bright quartz sand does, with the same shape across bands. It maps the standardized values back to reflectance,
so it needs a standardization that fixes that mapping (``reflectance``, ``log-reflectance``, ``fixed``). With
``gain_classes`` only those label classes' pixels (sand) change, their edges blended over 3 px: the rest of the
scene (marsh a few hundredths of reflectance above water in SWIR1) keeps its values.
Photometric jitter (image only, on standardized values): brightness (± shift) and contrast (± relative
scale about each sample's mean), per band or for all bands.
Sensor differences (image only): ``resolution`` averages a sample over blocks of a random size in
[1, 1 + resolution] pixels and resamples it back bilinearly (10 m imagery seen as 20–30 m), on a share
``resolution_fraction`` of the samples (the others keep their native sharpness); ``haze`` adds a
random positive shift that is largest in the first band (blue) and falls to a fifth of it in the last
(bands in wavelength order), as path radiance does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eoseg.classes import NODATA_CLASS
from eoseg.config import AugmentConfig
from eoseg.errors import ConfigError
from eoseg.standardize import ReflectanceSpace


class Augmenter:
    """``augmenter(x (N, C, H, W) float, y (N, H, W) int) -> (x, y)``; deterministic for a given seed."""

    def __init__(self, cfg: AugmentConfig, seed: int = 0, ignore_index: int = NODATA_CLASS,
                 space: ReflectanceSpace | None = None):
        """``space``: how standardized values map back to reflectance
        (:attr:`eoseg.standardize.Standardization.reflectance_space`), which ``gain`` needs."""
        if cfg.enabled and cfg.gain and space is None:
            raise ConfigError("augment.gain scales reflectance, and this standardization does not fix it",
                              path="augment.gain",
                              fix="use standardization: reflectance or log-reflectance (or fixed), or set gain: 0")
        self.cfg = cfg
        self.ignore_index = ignore_index
        self.space = space
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) * 2 - 1) * bound

    def _coin(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) < 0.5

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cfg.enabled:
            return x, y
        x, y = x.clone(), y.clone()
        x, y = self._flips(x, y)
        if self.cfg.rotation or self.cfg.shift or self.cfg.zoom:
            x, y = self._affine(x, y)
        if self.cfg.gain:
            x = self._gain(x, y)
        if self.cfg.brightness or self.cfg.contrast:
            x = self._photometric(x)
        if self.cfg.resolution:
            x = self._coarsen(x)
        if self.cfg.haze:
            x = self._haze(x)
        return x, y

    def _flips(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        if self.cfg.hflip:
            m = self._coin(n)
            x[m], y[m] = x[m].flip(-1), y[m].flip(-1)
        if self.cfg.vflip:
            m = self._coin(n)
            x[m], y[m] = x[m].flip(-2), y[m].flip(-2)
        if self.cfg.rot90 and x.shape[-1] == x.shape[-2]:
            k = torch.randint(0, 4, (n,), generator=self.generator)
            for i in range(n):
                if k[i]:
                    x[i] = torch.rot90(x[i], int(k[i]), dims=(-2, -1))
                    y[i] = torch.rot90(y[i], int(k[i]), dims=(-2, -1))
        return x, y

    def theta(self, n: int) -> torch.Tensor:
        """Random (N, 2, 3) affine matrices in ``affine_grid``'s normalized output→input coordinates."""
        angle = self._uniform(n, math.radians(self.cfg.rotation))
        scale = 1.0 + self._uniform(n, self.cfg.zoom)
        tx, ty = self._uniform(n, 2 * self.cfg.shift), self._uniform(n, 2 * self.cfg.shift)  # [-1, 1] spans 2
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)

    def _affine(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return warp(x, y, self.theta(x.shape[0]), self.ignore_index)

    def _gain(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        factor = torch.exp(self._uniform(n, math.log1p(self.cfg.gain))).view(n, 1, 1, 1).to(x)
        if self.cfg.gain_classes:
            inside = torch.isin(y, torch.tensor(self.cfg.gain_classes, device=y.device)).unsqueeze(1).to(x)
            weight = F.avg_pool2d(inside, 3, stride=1, padding=1, count_include_pad=False)
            factor = 1.0 + (factor - 1.0) * weight
        return gain_reflectance(x, factor, self.space)

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        # per band: each band shifted and scaled on its own, as when a scene's per-band stretch differs from
        # the training chips' (another land/water mix, haze); otherwise one shift and scale for all bands
        n, c = x.shape[:2]
        bands = c if self.cfg.per_band else 1
        shape = (n, bands, 1, 1)
        contrast = (1.0 + self._uniform(n * bands, self.cfg.contrast)).view(shape).to(x)
        brightness = self._uniform(n * bands, self.cfg.brightness).view(shape).to(x)
        mean = x.mean(dim=(2, 3) if self.cfg.per_band else (1, 2, 3), keepdim=True)
        return (x - mean) * contrast + mean + brightness


    def _coarsen(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        factors = 1.0 + torch.rand(n, generator=self.generator) * self.cfg.resolution
        factors[torch.rand(n, generator=self.generator) >= self.cfg.resolution_fraction] = 1.0
        return torch.cat([coarsen(x[i:i + 1], float(f)) for i, f in enumerate(factors)])

    def _haze(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        amount = torch.rand(n, generator=self.generator) * self.cfg.haze
        profile = torch.linspace(1.0, 0.2, c) if c > 1 else torch.ones(1)
        return x + (amount[:, None] * profile[None, :]).view(n, c, 1, 1).to(x)


def coarsen(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` (N, C, H, W) seen at ``factor`` × coarser pixels: block means, resampled back bilinearly."""
    h, w = x.shape[-2:]
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    if small == (h, w):
        return x
    coarse = F.interpolate(x.float(), size=small, mode="area")
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).to(x.dtype)


def gain_reflectance(x: torch.Tensor, factor: torch.Tensor, space: ReflectanceSpace) -> torch.Tensor:
    """Standardized ``x`` (N, C, H, W) whose reflectance is multiplied by ``factor`` (broadcast to ``x``)."""
    c = x.shape[1]
    mean = torch.tensor(space.mean, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    std = torch.tensor(space.std, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
    u = x * std + mean
    if space.log_offset is None:
        return (u * factor - mean) / std
    r = (torch.exp(u) - space.log_offset).clamp(min=0.0)
    return (torch.log(r * factor + space.log_offset) - mean) / std


def warp(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor,
         ignore_index: int = NODATA_CLASS) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample image (bilinear, reflection) and label (nearest, outside → ignore) with the same ``theta``."""
    theta = theta.to(dtype=torch.float32, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    xw = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # labels shifted by +1 so that zero padding marks "outside"; nearest keeps the values exact
    yl = (y.float() + 1.0).unsqueeze(1)
    yw = F.grid_sample(yl, grid, mode="nearest", padding_mode="zeros", align_corners=False).squeeze(1)
    out = torch.where(yw == 0, torch.full_like(yw, ignore_index + 1), yw) - 1
    return xw.to(x.dtype), out.round().to(y.dtype)
