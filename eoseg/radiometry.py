"""Radiometry: what a scene's values mean, and the affine scaling that turns them into reflectance (0–1).

:func:`scene_scaling` decides once per scene, from what the file and its metadata say, a per-band
``reflectance = value × scale + offset`` for the bands a model reads. The evidence is tried in this order
and the first that applies wins (:attr:`Scaling.source` names it, :attr:`Scaling.detail` says why):

1. ``user``: ``--scale`` / ``--offset`` given.
1b. an archive product's metadata (:mod:`eoseg.products`: MTL, ``MTD_MSIL*.xml``, STAC ``raster:bands``),
   with the source names below.
2. ``float``: floating-point data is taken as reflectance as it is (CoastSat ``_ms`` tiles, TOA composites).
3. ``band-metadata``: the raster declares a band scale / offset (GDAL ``scale`` / ``offset``) other than 1 / 0.
4. ``landsat-c2-l2``: Landsat Collection 2 Level-2 surface reflectance (``SR_B*`` band names, ``L2SP`` /
   ``L2SR`` in the file name or tags, or a Level-2 MTL): ``× 0.0000275 − 0.2`` (USGS Landsat Collection 2
   Level-2 Science Product Guide).
5. ``sentinel2``: Sentinel-2 L1C / L2A digital numbers (a Sentinel-2 sensor in the name or tags, or
   zero-padded band codes ``B02``…): ``÷ 10000``, plus ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` (−1000
   from processing baseline 04.00 on, ESA's Sentinel-2 L1C / L2A product specification) when the metadata
   carries the offset or the baseline (a ``PROCESSING_BASELINE`` tag or ``_N0400`` in a product name).
6. ``landsat-l1-mtl``: Landsat Level-1 digital numbers with their ``<product id>_MTL.txt`` next to the file:
   ``(REFLECTANCE_MULT_BAND_n × DN + REFLECTANCE_ADD_BAND_n) / sin(SUN_ELEVATION)`` (USGS, "Using the USGS
   Landsat Level-1 Data Product").

Integer data with none of this evidence raises :class:`~eoseg.errors.ScalingError`.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from eoseg.errors import ScalingError
from eoseg.scene import LANDSAT_OLI, LANDSAT_TM, Scene, scene_sensor

log = logging.getLogger(__name__)

# Reflectance values outside this range are clipped before the z-score (shadows, noise, glint and clouds).
REFLECTANCE_RANGE = (-0.1, 1.5)
SENTINEL2_QUANTIFICATION = 10000.0
SENTINEL2_OFFSET_BASELINE = 4.0  # processing baseline 04.00 (25 January 2022) introduced the -1000 offset
SENTINEL2_OFFSET = -1000.0
LANDSAT_L2_SCALE, LANDSAT_L2_OFFSET = 2.75e-05, -0.2

_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})(?:_|$)")
_L2 = re.compile(r"(^|[^A-Z0-9])L2S[PR]([^A-Z0-9]|$)", re.I)
_LANDSAT_NUMBER = re.compile(r"^(?:SR_|TOA_)?B(?:AND)?_?0*(\d{1,2})$", re.I)


@dataclass(frozen=True)
class Scaling:
    """``reflectance = value × scale + offset`` per band (in the model's band order)."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    source: str
    detail: str

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` (C, H, W) to reflectance, float32."""
        shape = (len(self.scale), 1, 1)
        scale = np.asarray(self.scale, np.float32).reshape(shape)
        offset = np.asarray(self.offset, np.float32).reshape(shape)
        return (np.asarray(x, np.float32) * scale + offset).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {"scale": list(self.scale), "offset": list(self.offset), "source": self.source, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> Scaling:
        return cls(tuple(float(v) for v in data["scale"]), tuple(float(v) for v in data["offset"]),
                   str(data.get("source", "")), str(data.get("detail", "")))


@dataclass(frozen=True)
class _Evidence:
    path: Path
    dtype: str
    sensor: str | None
    roles: tuple[str, ...]
    descriptions: tuple[str, ...]  # of the mapped bands ('' where none)
    text: str  # file name and every tag value, for product names
    tags: dict[str, str]  # dataset tags and the mapped bands' tags, keys upper-case
    band_tags: tuple[dict[str, str], ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]


def _evidence(scene: Scene) -> _Evidence:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(scene.dataset) as ds:
            tags = {k.upper(): v for k, v in ds.tags().items()}
            band_tags = tuple({k.upper(): v for k, v in ds.tags(i).items()} for i in scene.band_indexes)
            descriptions = tuple((ds.descriptions[i - 1] or "").strip() for i in scene.band_indexes)
            all_descriptions = [d or "" for d in ds.descriptions]
            scales = tuple(float(ds.scales[i - 1]) for i in scene.band_indexes)
            offsets = tuple(float(ds.offsets[i - 1]) for i in scene.band_indexes)
    sensor = scene_sensor(scene.path.name, tags, all_descriptions)
    text = " ".join([scene.path.name, *tags.values(), *(v for t in band_tags for v in t.values())])
    return _Evidence(scene.path, scene.dtype, sensor, tuple(scene.roles), descriptions, text, tags, band_tags,
                     scales, offsets)


def _per_band(value: float | Sequence[float], n: int, name: str, path: Path) -> tuple[float, ...]:
    values = (float(value),) * n if isinstance(value, int | float) else tuple(float(v) for v in value)
    if len(values) != n:
        raise ScalingError(f"{name} has {len(values)} value(s) but the model reads {n} band(s)", path=path,
                           fix=f"give one {name} or one per band")
    return values


def _from_user(ev: _Evidence, scale, offset) -> Scaling | None:
    if scale is None and offset is None:
        return None
    n = len(ev.roles)
    return Scaling(_per_band(1.0 if scale is None else scale, n, "--scale", ev.path),
                   _per_band(0.0 if offset is None else offset, n, "--offset", ev.path),
                   "user", "--scale / --offset given")


def _from_product(scene: Scene) -> Scaling | None:
    """An archive product's own metadata (MTL, MTD_MSIL*.xml, STAC raster:bands): see :mod:`eoseg.products`."""
    product = scene.product
    if product is None:
        return None
    bands = [product.bands[i - 1] for i in scene.band_indexes]
    if any(b.scale is None or b.offset is None for b in bands):
        return None
    return Scaling(tuple(b.scale for b in bands), tuple(b.offset for b in bands), product.scaling_source,
                   product.scaling_detail)


def _from_float(ev: _Evidence) -> Scaling | None:
    if not np.issubdtype(np.dtype(ev.dtype), np.floating):
        return None
    n = len(ev.roles)
    return Scaling((1.0,) * n, (0.0,) * n, "float", f"{ev.dtype} values taken as reflectance")


def _from_band_metadata(ev: _Evidence) -> Scaling | None:
    if all(s == 1.0 for s in ev.scales) and all(o == 0.0 for o in ev.offsets):
        return None
    return Scaling(ev.scales, ev.offsets, "band-metadata", "the raster's band scale / offset")


def _from_landsat_l2(ev: _Evidence) -> Scaling | None:
    if any(d.upper().startswith("SR_B") for d in ev.descriptions):
        why = "SR_B* band names"
    elif _L2.search(ev.text):
        why = "L2SP / L2SR in the file name or tags"
    else:
        mtl = find_mtl(ev.path)
        if mtl is None or not read_mtl(mtl).get("PROCESSING_LEVEL", "").upper().startswith("L2"):
            return None
        why = f"Level-2 metadata {mtl.name}"
    n = len(ev.roles)
    return Scaling((LANDSAT_L2_SCALE,) * n, (LANDSAT_L2_OFFSET,) * n, "landsat-c2-l2",
                   f"Landsat Collection 2 Level-2 surface reflectance ({why})")


def sentinel2_offset(tags: dict[str, str], band_tags: Sequence[dict[str, str]], text: str) -> tuple[
        tuple[float, ...] | float, str]:
    """The digital-number offset added before ÷ 10000, and where it came from."""
    per_band = [next((float(v) for k, v in t.items() if "ADD_OFFSET" in k and _number(v)), None) for t in band_tags]
    if per_band and all(v is not None for v in per_band):
        return tuple(per_band), "band ADD_OFFSET tags"
    for key, value in tags.items():
        if ("BOA_ADD_OFFSET" in key or "RADIO_ADD_OFFSET" in key) and _number(value):
            return float(value), f"{key} tag"
    for key, value in tags.items():
        if "PROCESSING_BASELINE" in key and _number(value):
            baseline = float(value)
            return (SENTINEL2_OFFSET if baseline >= SENTINEL2_OFFSET_BASELINE else 0.0), \
                f"processing baseline {value} ({key} tag)"
    match = _BASELINE_IN_NAME.search(text)
    if match:
        baseline = int(match.group(1)) + int(match.group(2)) / 100
        return (SENTINEL2_OFFSET if baseline >= SENTINEL2_OFFSET_BASELINE else 0.0), \
            f"processing baseline {baseline:05.2f} (product name)"
    return 0.0, "no processing baseline in the metadata, so no offset"


def _acquired_after_baseline_04(name: str) -> bool:
    """Whether a date in a file name (YYYYMMDD or YYYY-MM-DD) is on or after processing baseline 04.00."""
    match = re.search(r"(?<!\d)(20\d{2})-?([01]\d)-?([0-3]\d)(?!\d)", name)
    return bool(match) and "".join(match.groups()) >= "20220125"


def _number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _from_sentinel2(ev: _Evidence) -> Scaling | None:
    if ev.sensor != "sentinel2":
        return None
    n = len(ev.roles)
    dn_offset, why = sentinel2_offset(ev.tags, ev.band_tags, ev.text)
    if why.startswith("no processing baseline") and _acquired_after_baseline_04(ev.path.name):
        log.warning("%s: the name dates it on or after 2022-01-25 (processing baseline 04.00, DN offset -1000) but "
                    "no metadata says its baseline; no offset applied. If it was processed with baseline >= 04.00, "
                    "pass --scale 0.0001 --offset -0.1", ev.path)
    offsets = _per_band(dn_offset, n, "offset", ev.path)
    q = SENTINEL2_QUANTIFICATION
    return Scaling((1 / q,) * n, tuple(o / q for o in offsets), "sentinel2",
                   f"Sentinel-2 digital numbers ÷ {q:g}; {why}")


# ---------------------------------------------------------------------------------------------- Landsat MTL


def find_mtl(path: Path) -> Path | None:
    """The ``<product id>_MTL.txt`` next to ``path`` whose product id starts the scene's file name."""
    stem = path.name.upper()
    for candidate in sorted(path.parent.glob("*_MTL.*")):
        if candidate.suffix.lower() != ".txt":
            continue
        product = candidate.name[: -len("_MTL.txt")].upper()
        if product and stem.startswith(product):
            return candidate
    return None


def read_mtl(path: Path) -> dict[str, str]:
    """``KEY = value`` pairs of a Landsat MTL file (quotes removed). Level-2 reflectance keys of a
    Collection 2 MTL are prefixed ``L2:`` so that they do not replace the Level-1 ones."""
    values: dict[str, str] = {}
    groups: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep:
            continue
        if key == "GROUP":
            groups.append(value)
        elif key == "END_GROUP":
            groups = groups[:-1]
        else:
            prefix = "L2:" if any(g.startswith("LEVEL2") for g in groups) else ""
            values[prefix + key] = value.strip('"')
    return values


def _landsat_band_number(description: str, role: str, sensor: str | None) -> int | None:
    match = _LANDSAT_NUMBER.match(description)
    if match:
        return int(match.group(1))
    table = LANDSAT_TM if sensor == "landsat_tm" else LANDSAT_OLI
    numbers = [int(code[1:]) for code, r in table.items() if r == role and code[1:].isdigit()]
    return numbers[0] if numbers else None


def _mtl_sensor(mtl: dict[str, str], fallback: str | None) -> str | None:
    spacecraft = mtl.get("SPACECRAFT_ID", "")
    if re.search(r"[89]$", spacecraft):
        return "landsat_oli"
    if re.search(r"[457]$", spacecraft):
        return "landsat_tm"
    return fallback


def _from_mtl(ev: _Evidence) -> Scaling | None:
    path = find_mtl(ev.path)
    if path is None:
        return None
    mtl = read_mtl(path)
    sensor = _mtl_sensor(mtl, ev.sensor)
    try:
        sun = math.radians(float(mtl["SUN_ELEVATION"]))
    except (KeyError, ValueError):
        raise ScalingError(f"{path.name} has no SUN_ELEVATION", path=ev.path,
                           fix="use the product's original MTL file, or pass --scale and --offset") from None
    scales, offsets = [], []
    for description, role in zip(ev.descriptions, ev.roles, strict=True):
        number = _landsat_band_number(description, role, sensor)
        mult, add = mtl.get(f"REFLECTANCE_MULT_BAND_{number}"), mtl.get(f"REFLECTANCE_ADD_BAND_{number}")
        if number is None or mult is None or add is None:
            raise ScalingError(f"{path.name} has no REFLECTANCE_MULT/ADD for the {role} band (band {number})",
                               path=ev.path, fix="pass --scale and --offset, or map another band with --bands")
        scales.append(float(mult) / math.sin(sun))
        offsets.append(float(add) / math.sin(sun))
    return Scaling(tuple(scales), tuple(offsets), "landsat-l1-mtl",
                   f"Landsat Level-1 REFLECTANCE_MULT/ADD and SUN_ELEVATION {math.degrees(sun):.2f}° "
                   f"from {path.name}")


# ---------------------------------------------------------------------------------------------- decision


def scene_scaling(scene: Scene, scale: float | Sequence[float] | None = None,
                  offset: float | Sequence[float] | None = None) -> Scaling:
    """The scaling that turns the mapped bands of ``scene`` into reflectance (see the module docstring)."""
    ev = _evidence(scene)
    found = _from_user(ev, scale, offset) or _from_product(scene)
    for rule in (_from_float, _from_band_metadata, _from_landsat_l2, _from_sentinel2, _from_mtl):
        found = found or rule(ev)
    if found is None:
        raise ScalingError(
            f"cannot tell the units of its {ev.dtype} values (no Sentinel-2 band names, Landsat Level-2 names, "
            "band scale/offset or *_MTL.txt next to it)", path=scene.path,
            fix="pass --scale and --offset so that value × scale + offset is reflectance 0–1 "
                "(e.g. --scale 0.0001 for reflectance × 10000)",
        )
    log.info("%s: reflectance = value × %s + %s (%s: %s)", scene.path.name, _short(found.scale),
             _short(found.offset), found.source, found.detail)
    return found


def _short(values: tuple[float, ...]) -> str:
    unique = sorted(set(values))
    return f"{unique[0]:.6g}" if len(unique) == 1 else "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def check_reflectance_range(scaling: Scaling, p98: Sequence[float], path: Path) -> None:
    """Warn when a band's 98th percentile, scaled, is far above any reflectance (wrong units)."""
    high = [float(v) * s + o for v, s, o in zip(p98, scaling.scale, scaling.offset, strict=True)]
    if max(high) > REFLECTANCE_RANGE[1]:
        log.warning("%s: after scaling (%s) the 98th percentile reaches %.3g, above reflectance; check the units "
                    "or pass --scale and --offset", path, scaling.source, max(high))
