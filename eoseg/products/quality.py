"""Quality layers: what ``--mask`` makes nodata, and the per-scene valid / cloud fractions.

Quality layers are decoded by :func:`quality_flags` following each product's documentation:

- Landsat Collection 2 ``QA_PIXEL`` bits (USGS, Landsat 8-9 Collection 2 Level-2 Science Product Guide):
  0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow.
- Landsat Collection 2 ``QA_RADSAT`` (USGS, same guide): bit n − 1 set where band n is saturated; a pixel
  saturated in a band the model reads is invalid.
- Sentinel-2 L2A ``SCL`` classes (ESA, Sentinel-2 L2A algorithm theoretical basis, scene classification):
  0 no data, 1 saturated or defective, 3 cloud shadows, 8 cloud medium probability, 9 cloud high
  probability, 10 thin cirrus, 11 snow or ice.
- Sentinel-2 L1C ``MSK_CLASSI_B00`` (processing baseline 04.00 on; ESA L1C product specification): bands
  opaque clouds, cirrus, snow / ice, each non-zero where flagged.
- Sentinel-2 L1C ``MSK_CLOUDS_B00.gml`` (before baseline 04.00): OPAQUE and CIRRUS polygons, both clouds,
  rasterized per read window into a one-band layer (1 opaque, 2 cirrus; :mod:`eoseg.products.gml`). It has no
  shadow, snow or fill.

Fill and saturated / defective pixels are always invalid (unless ``--mask none``); ``--mask`` chooses which of
clouds, cloud shadow and snow are masked too (default ``clouds,shadow``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from eoseg.errors import ConfigError, SceneReadError

MASK_CLASSES = ("clouds", "shadow", "snow")
DEFAULT_MASK = "clouds,shadow"

# Landsat Collection 2 QA_PIXEL bits (USGS).
QA_FILL, QA_DILATED_CLOUD, QA_CIRRUS, QA_CLOUD, QA_SHADOW, QA_SNOW = 0, 1, 2, 3, 4, 5
# Sentinel-2 L2A scene classification classes (ESA).
SCL_NO_DATA, SCL_DEFECTIVE, SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 0, 1, 3, 8, 9, 10, 11


@dataclass(frozen=True)
class MaskFractions:
    """Per-scene fractions from the quality layer: valid (not fill nor masked) of all pixels; cloud, shadow and
    snow of the non-fill pixels."""

    valid: float
    cloud: float
    shadow: float
    snow: float
    fill: float

    def to_dict(self) -> dict:
        return {k: round(v, 6) for k, v in self.__dict__.items()}




def parse_mask(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``'clouds,shadow'`` → ``('clouds', 'shadow')``; ``'none'`` → ``()``; unknown names raise ConfigError."""
    if value is None:
        value = DEFAULT_MASK
    items = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if items in (["none"], []):
        return ()
    aliases = {"cloud": "clouds", "shadows": "shadow", "cloud_shadow": "shadow", "ice": "snow"}
    items = [aliases.get(v, v) for v in items]
    bad = [v for v in items if v not in MASK_CLASSES]
    if bad:
        raise ConfigError(f"unknown mask class {bad[0]!r}", path="--mask",
                          fix=f"use a comma-separated list of {', '.join(MASK_CLASSES)}, or none")
    return tuple(c for c in MASK_CLASSES if c in items)




def quality_flags(layer: np.ndarray, kind: str, saturation_bits: int = 0) -> dict[str, np.ndarray]:
    """``{fill, clouds, shadow, snow}`` boolean arrays (H, W) from a quality layer's bands (B, H, W).

    For ``qa_pixel`` a second band is ``QA_RADSAT``: pixels with any of ``saturation_bits`` set count as fill.
    """
    if kind == "qa_pixel":
        qa = layer[0].astype(np.uint16)

        def bit(b: int) -> np.ndarray:
            return (qa >> b) & 1 == 1

        fill = bit(QA_FILL)
        if saturation_bits and layer.shape[0] > 1:
            fill = fill | ((layer[1].astype(np.uint16) & saturation_bits) != 0)
        return {"fill": fill, "clouds": bit(QA_CLOUD) | bit(QA_DILATED_CLOUD) | bit(QA_CIRRUS),
                "shadow": bit(QA_SHADOW), "snow": bit(QA_SNOW)}
    if kind == "scl":
        scl = layer[0]
        return {"fill": np.isin(scl, (SCL_NO_DATA, SCL_DEFECTIVE)),
                "clouds": np.isin(scl, (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)),
                "shadow": scl == SCL_SHADOW, "snow": scl == SCL_SNOW}
    if kind == "msk_clouds":
        none = np.zeros(layer.shape[1:], bool)
        return {"fill": none, "clouds": layer[0] != 0, "shadow": none, "snow": none}
    if kind == "classi":
        flagged = [layer[i] != 0 if i < layer.shape[0] else np.zeros(layer.shape[1:], bool) for i in range(3)]
        return {"fill": np.zeros(layer.shape[1:], bool), "clouds": flagged[0] | flagged[1], "shadow":
                np.zeros(layer.shape[1:], bool), "snow": flagged[2]}
    raise ValueError(f"unknown quality layer kind {kind!r}")


def masked_pixels(layer: np.ndarray, kind: str, classes: Sequence[str], saturation_bits: int = 0) -> np.ndarray:
    """Pixels the model must not see: fill and saturation (always) and the chosen ``classes``."""
    flags = quality_flags(layer, kind, saturation_bits)
    out = flags["fill"].copy()
    for name in classes:
        out |= flags[name]
    return out






@contextmanager
def open_quality_layer(scene) -> Iterator:
    """A product scene's quality layer, open on the scene's grid: something with ``width``, ``height`` and
    ``read(window=...)`` → ``(bands, h, w)`` — the raster layer's VRT through rasterio, or the GML cloud polygons
    rasterized per window (:class:`eoseg.products.gml.GmlCloudLayer`)."""
    mask = scene.mask
    if mask.kind == "msk_clouds":
        from eoseg.products.gml import GmlCloudLayer, read_cloud_gml

        yield GmlCloudLayer(read_cloud_gml(Path(mask.source), scene.crs), scene.transform, scene.width, scene.height)
        return
    try:
        ds = rasterio.open(mask.source)
    except RasterioError as exc:
        raise SceneReadError(f"cannot open the quality layer ({str(exc).splitlines()[0] if str(exc) else exc!r})",
                             path=scene.path, fix="re-download the product") from exc
    with ds:
        yield ds


def mask_fractions(scene, rows: int = 512) -> MaskFractions | None:
    """Fill, cloud, shadow and snow fractions of a product scene's quality layer, read strip by strip (None when
    the scene has no quality layer or ``--mask none``). Cloud / shadow / snow are fractions of the non-fill
    pixels; ``valid`` is the fraction of all pixels neither fill nor masked."""
    if scene.mask is None:
        return None
    from rasterio.windows import Window

    counts = dict.fromkeys(("fill", "clouds", "shadow", "snow", "masked"), 0)
    bits = scene.mask.saturation_bits
    with open_quality_layer(scene) as ds:
        for top in range(0, ds.height, rows):
            layer = ds.read(window=Window(0, top, ds.width, min(rows, ds.height - top)))
            flags = quality_flags(layer, scene.mask.kind)  # fill without saturation: clouds are of the scene
            fill = flags["fill"]
            counts["fill"] += int(fill.sum())
            for name in MASK_CLASSES:
                counts[name] += int((flags[name] & ~fill).sum())
            counts["masked"] += int(masked_pixels(layer, scene.mask.kind, scene.mask.classes, bits).sum())
    total = scene.width * scene.height
    clear = max(total - counts["fill"], 1)
    return MaskFractions(valid=(total - counts["masked"]) / total, cloud=counts["clouds"] / clear,
                         shadow=counts["shadow"] / clear, snow=counts["snow"] / clear, fill=counts["fill"] / total)


def scene_quality(scene, valid_fraction: float | None = None) -> dict:
    """``{valid_fraction, cloud_fraction, ...}`` for reports; ``valid_fraction`` (all bands valid and not masked,
    from :func:`eoseg.scene.preflight`) wins over the quality layer's own when given."""
    fractions = mask_fractions(scene)
    out = {"valid_fraction": valid_fraction if valid_fraction is not None else (fractions.valid if fractions else None),
           "cloud_fraction": fractions.cloud if fractions else None}
    if fractions is not None:
        out.update(shadow_fraction=fractions.shadow, snow_fraction=fractions.snow, fill_fraction=fractions.fill,
                   masked=list(scene.mask.classes))
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}


def product_info(scene) -> dict | None:
    """What a product scene says about itself: id, kind, sensor, platform, level, acquisition datetime."""
    product = scene.product
    if product is None:
        return None
    return {"product_id": product.product_id, "kind": product.kind, "sensor": product.sensor,
            "platform": product.platform, "level": product.level,
            "datetime": product.datetime.isoformat() if product.datetime else None}


def stac_properties(scene, quality: dict | None) -> dict:
    """Extra STAC item properties for a scene: valid / cloud fractions and, for products, where they came from."""
    props = {}
    if quality:
        props["eoseg:valid_fraction"] = quality.get("valid_fraction")
        if quality.get("cloud_fraction") is not None:
            props["eoseg:cloud_fraction"] = quality["cloud_fraction"]
            props["eoseg:masked"] = quality.get("masked")
    info = product_info(scene)
    if info:
        props["eoseg:product"] = info
        if info["platform"]:
            props["platform"] = info["platform"]
    return props
