"""Standardization: the transform applied to every tile before the model sees it.

Modes
- ``scene``: per-band z-score with statistics of the valid pixels of the whole scene, applied
  identically to every tile (no seams between tiles).
- ``image``: Segmentation Gym's per-image z-score with all bands pooled,
  ``(x - mean) / max(std, 1 / sqrt(N))`` (N = number of values). Per tile at predict time.
- ``fixed``: per-band mean / std stored with the model.
- ``stretch``: per-band percentile stretch of the scene, ``(x - p02) / (p98 - p02)``, clipped to
  ``STRETCH_RANGE`` (-0.5 … 1.5), then the stored mean / std z-score. It maps any sensor's scale (DN,
  reflectance, 8-bit) onto the stretched range of 8-bit imagery such as the Ocean Beach chips, while
  keeping each band's contrast. The clip bounds what clouds or sun glint (many spreads above p98) feed
  the model to the range training saw, since training applies the same transform. A band that is
  constant in the scene (p98 = p02) is fed as 0 with a warning, once per scene, naming the band.
- ``reflectance``: the scene's values turned into reflectance by a per-scene :class:`~eoseg.radiometry.Scaling`
  (decided once from the file's metadata by :func:`eoseg.radiometry.scene_scaling`), clipped to
  :data:`~eoseg.radiometry.REFLECTANCE_RANGE`, then the stored per-band mean / std z-score. A pixel's value
  does not depend on the rest of the scene.
- ``log-reflectance``: as ``reflectance``, then ``ln(max(r, 0) + log_offset)`` (``LOG_OFFSET`` = 0.01) before the
  stored z-score. Reflectance spans two orders of magnitude between water and sand, and what separates classes is
  relative: winter marsh (SWIR1 ≈ 0.04) is 0.4 z-units from open water (0.006) under the linear z-score but 1.2
  under the log one, while a dark gravel beach (0.13) and bright quartz sand (0.21–0.32) come 6.4 → 4.1 z-units
  closer over the five bands (training pieces' pooled statistics). A reflectance gain becomes a shift, which
  convolutions see alike everywhere; the offset keeps the noise of dark water (0–0.01) from being stretched.

Invalid (nodata) pixels take the transformed value of the nearest valid pixel (:func:`fill_invalid`), as a
scene's edge is extended by padding: a scene clipped to a footprint (a CoastSat tile's collar, a Landsat scene's
corners, a Sentinel-2 tile edge) shows the model its coast continuing, not a flat grey region whose edge looks
like a shore. A tile with no valid pixel is all 0 (the mean). Training and prediction fill alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from eoseg.errors import ConfigError
from eoseg.radiometry import REFLECTANCE_RANGE, Scaling

Mode = Literal["scene", "image", "fixed", "stretch", "reflectance", "log-reflectance"]
MODES: tuple[str, ...] = get_args(Mode)
REFLECTANCE_MODES = ("reflectance", "log-reflectance")  # modes that turn the scene's values into reflectance
LOG_OFFSET = 0.01  # log-reflectance: ln(max(r, 0) + LOG_OFFSET)
_EPS = 1e-6
STRETCH_RANGE = (-0.5, 1.5)  # stretched values are clipped to this range (in training and prediction alike)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Standardization:
    mode: Mode
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    low: tuple[float, ...] | None = None  # stretch: per-band 2nd percentile of the scene
    high: tuple[float, ...] | None = None  # stretch: per-band 98th percentile of the scene
    scaling: Scaling | None = None  # reflectance: the scene's values → reflectance
    log_offset: float = LOG_OFFSET  # log-reflectance: added to the reflectance before the logarithm

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"unknown standardization mode {self.mode!r}", path="standardization",
                fix=f"use one of: {', '.join(MODES)}",
            )

    @property
    def reflectance_space(self) -> ReflectanceSpace | None:
        """How the standardized values map back to reflectance (``reflectance``, ``log-reflectance``) or to the
        data's units (``fixed``): what a reflectance gain needs; None where the values depend on the scene."""
        if self.mode not in (*REFLECTANCE_MODES, "fixed") or self.mean is None or self.std is None:
            return None
        log_offset = self.log_offset if self.mode == "log-reflectance" else None
        return ReflectanceSpace(self.mean, tuple(max(s, _EPS) for s in self.std), log_offset)  # as _per_band

    @property
    def needs_scene_stats(self) -> bool:
        return self.mode in ("scene", "stretch")

    def with_stats(self, mean=None, std=None, low=None, high=None,
                   names: Sequence[str] | None = None) -> Standardization:
        """A copy carrying one scene's statistics (for ``scene`` and ``stretch`` modes); ``names`` name the
        bands in the warning about constant bands."""
        if self.mode == "scene":
            return replace(self, mean=tup(mean), std=tup(std))
        if self.mode == "stretch":
            warn_constant_bands(tup(low), tup(high), names)
            return replace(self, low=tup(low), high=tup(high))
        return self

    @property
    def needs_scaling(self) -> bool:
        return self.mode in REFLECTANCE_MODES

    def with_scaling(self, scaling: Scaling | None) -> Standardization:
        """A copy carrying a scene's scaling (for ``reflectance`` mode; a no-op for the others)."""
        return replace(self, scaling=scaling) if self.needs_scaling else self

    def for_stats(self, stats, names: Sequence[str] | None = None) -> Standardization:
        """A copy filled from a :class:`eoseg.scene.SceneStats` (a no-op for ``image`` / ``fixed``)."""
        return self.with_stats(mean=stats.mean, std=stats.std, low=stats.p02, high=stats.p98, names=names)

    def apply(self, x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Standardize ``x`` (C, H, W) float32; ``valid`` (H, W) marks the pixels that count."""
        out = self.transform(x, valid)
        return out if valid is None else fill_invalid(out, valid)

    def transform(self, x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """:meth:`apply` with invalid pixels set to 0 instead of filled: for a strip transformed piece by
        piece and filled once as a whole (:func:`eoseg.predict.standardize_in_place`)."""
        x = np.asarray(x, dtype=np.float32)
        out = image_zscore(x, valid) if self.mode == "image" else self._per_band(x)
        if valid is not None:
            out[:, ~valid] = 0.0
        return out

    def _per_band(self, x: np.ndarray) -> np.ndarray:
        if self.needs_scaling:
            x = reflectance(x, self._require_scaling(x.shape[0]))
            if self.mode == "log-reflectance":
                x = log_reflectance(x, self.log_offset)
            if self.mean is None:
                return x
        if self.mode == "stretch":
            x = self._stretch(x)
            if self.mean is None:
                return x.astype(np.float32)
        mean, std = self._require("mean", "std", x.shape[0])
        return ((x - mean) / np.maximum(std, _EPS)).astype(np.float32)

    def _require_scaling(self, bands: int) -> Scaling:
        if self.scaling is None:
            raise ConfigError(
                "reflectance standardization has no scaling for the scene", path="standardization",
                fix="decide it with eoseg.radiometry.scene_scaling and pass it to Standardization.with_scaling",
            )
        if len(self.scaling.scale) != bands:
            raise ConfigError(f"the scaling has {len(self.scaling.scale)} band(s) but the input has {bands}",
                              path="standardization", fix="decide the scaling for the bands the model reads")
        return self.scaling

    def _stretch(self, x: np.ndarray) -> np.ndarray:
        """``(x - low) / (high - low)`` clipped to ``STRETCH_RANGE``; 0 for a band with ``high - low`` ≈ 0."""
        low, high = self._require("low", "high", x.shape[0])
        span = high - low
        scale = np.where(_is_constant(low, high), 0.0, 1.0 / np.where(span == 0, 1.0, span)).astype(np.float32)
        with np.errstate(invalid="ignore"):  # ±inf nodata × 0: set to 0 with the other invalid pixels
            out = (x - low) * scale
        return np.clip(out, *STRETCH_RANGE, out=out)

    def _require(self, a: str, b: str, bands: int) -> tuple[np.ndarray, np.ndarray]:
        va, vb = getattr(self, a), getattr(self, b)
        if va is None or vb is None:
            raise ConfigError(
                f"{self.mode} standardization has no {a}/{b} statistics", path="standardization",
                fix="compute scene statistics first (Standardization.for_stats) or store them in the model card",
            )
        if len(va) != bands or len(vb) != bands:
            raise ConfigError(
                f"{self.mode} standardization has statistics for {len(va)} band(s) but the input has {bands}",
                path="standardization", fix="use statistics computed for the same bands",
            )
        shape = (bands, 1, 1)
        return np.asarray(va, np.float32).reshape(shape), np.asarray(vb, np.float32).reshape(shape)

    def to_dict(self) -> dict:
        data = {"mode": self.mode, "mean": _list(self.mean), "std": _list(self.std),
                "low": _list(self.low), "high": _list(self.high)}
        if self.scaling is not None:
            data["scaling"] = self.scaling.to_dict()
        if self.mode == "log-reflectance":
            data["log_offset"] = self.log_offset
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Standardization:
        scaling = Scaling.from_dict(data["scaling"]) if data.get("scaling") else None
        return cls(mode=data.get("mode", "scene"), mean=tup(data.get("mean")), std=tup(data.get("std")),
                   low=tup(data.get("low")), high=tup(data.get("high")), scaling=scaling,
                   log_offset=float(data.get("log_offset", LOG_OFFSET)))


def fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``x`` (C, H, W) with each invalid pixel set to the value of its nearest valid pixel, in place; unchanged
    when every pixel or none is valid. Nearest by chessboard distance (scipy's chamfer transform: a quarter of
    the Euclidean transform's time on a 640 × 2048 strip block, the same fill but for ties)."""
    invalid = ~valid
    if not invalid.any() or invalid.all():
        return x
    from scipy.ndimage import distance_transform_cdt

    rows, cols = distance_transform_cdt(invalid, metric="chessboard", return_distances=False, return_indices=True)
    x[:, invalid] = x[:, rows[invalid], cols[invalid]]
    return x


def reflectance(x: np.ndarray, scaling: Scaling) -> np.ndarray:
    """``x`` (C, H, W) scaled to reflectance and clipped to :data:`~eoseg.radiometry.REFLECTANCE_RANGE`."""
    return np.clip(scaling.apply(x), *REFLECTANCE_RANGE).astype(np.float32, copy=False)


def log_reflectance(r: np.ndarray, offset: float = LOG_OFFSET) -> np.ndarray:
    """``ln(max(r, 0) + offset)`` in float32: the ``log-reflectance`` transform of reflectance ``r``."""
    return np.log(np.maximum(r, 0.0) + np.float32(offset)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class ReflectanceSpace:
    """Standardized value ``z`` → reflectance ``r`` per band: ``u = z · std + mean``, then ``r = u`` (linear,
    ``log_offset`` None) or ``r = max(exp(u) − log_offset, 0)`` (log)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    log_offset: float | None = None


def _is_constant(low, high) -> np.ndarray:
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    return np.abs(high - low) <= _EPS * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))


def warn_constant_bands(low: tuple[float, ...] | None, high: tuple[float, ...] | None,
                        names: Sequence[str] | None = None) -> None:
    """One warning naming every band whose stretch range is empty (p02 = p98)."""
    if low is None or high is None:
        return
    constant = np.flatnonzero(_is_constant(low, high))
    if constant.size:
        labels = [names[i] if names is not None and i < len(names) else f"band {i + 1}" for i in constant]
        values = ", ".join(f"{label} = {low[i]:g}" for label, i in zip(labels, constant, strict=True))
        log.warning("stretch standardization: constant band(s) in this scene (2nd = 98th percentile): %s; "
                    "fed to the model as 0 (check the band mapping, --bands, or the scene's nodata)", values)


def tup(values) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def _list(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else list(values)


def image_zscore(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Segmentation Gym's per-image standardization, all bands pooled, over the valid pixels."""
    values = x[:, valid] if valid is not None else x.reshape(x.shape[0], -1)
    if values.size == 0:
        return np.zeros_like(x, dtype=np.float32)
    mean = float(values.mean())
    std = max(float(values.std()), 1.0 / np.sqrt(values.size))
    return ((x - mean) / std).astype(np.float32)
