"""Archive products as scenes: Landsat Collection 2 folders, Sentinel-2 products and STAC items.

:func:`find_product` recognizes what a user hands over — a Landsat product folder, its ``_MTL.txt`` /
``_MTL.json`` or any of its band files; a Sentinel-2 ``.SAFE`` folder, its ``MTD_MSIL*.xml`` or a folder of
per-band files; a STAC Item (or a one-item ItemCollection) JSON — and returns a :class:`Product`: the band
files with their roles, the reflectance scaling the product metadata gives, the quality layer and what the
product says about itself (id, sensor, acquisition time).

:func:`band_vrt` stacks the bands as a GDAL VRT (an XML string that rasterio opens as it is): nothing is
copied, the model's bands are read window by window through GDAL as from any GeoTIFF. Bands coarser than the
finest one (Sentinel-2's 20 m bands on the 10 m grid) are resampled on the fly by **nearest neighbour**:

- each 10 m pixel keeps the value the product measured for its 20 m pixel, so no spectrum is made up where
  water meets sand (bilinear mixes the two sides of a shoreline into values neither surface has, exactly
  in the pixels the model is asked to decide);
- it is what the packaged models saw in training (the Virginia 10 m stack's B11/B12 are nearest-upsampled),
  and what a 20 m classification layer (SCL) needs anyway: class codes cannot be interpolated;
- it is exact and reproducible (a 20 m pixel is two by two 10 m pixels), so a product input gives the same
  classes as a stack made by hand with ``gdalbuildvrt -r nearest`` or ``gdal_translate -r nearest``.

Quality layers are decoded by :func:`quality_flags` following each product's documentation:

- Landsat Collection 2 ``QA_PIXEL`` bits (USGS, Landsat 8-9 Collection 2 Level-2 Science Product Guide,
  table 6-3): 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow.
- Sentinel-2 L2A ``SCL`` classes (ESA, Sentinel-2 L2A algorithm theoretical basis, scene classification):
  0 no data, 1 saturated or defective, 3 cloud shadows, 8 cloud medium probability, 9 cloud high
  probability, 10 thin cirrus, 11 snow or ice.
- Sentinel-2 L1C ``MSK_CLASSI_B00`` (processing baseline 04.00 on; ESA L1C product specification): bands
  opaque clouds, cirrus, snow / ice, each non-zero where flagged. Earlier L1C products carry their cloud
  mask as GML vectors, which are not read (a warning says so).

- Landsat Collection 2 ``QA_RADSAT`` (USGS, same guide): bit n − 1 set where band n is saturated; a pixel
  saturated in a band the model reads is invalid.

Fill and saturated / defective pixels are always invalid (unless ``--mask none``); ``--mask`` chooses which of
clouds, cloud shadow and snow are masked too (default ``clouds,shadow``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from eoseg.errors import BandMappingError, ConfigError, GeoreferenceError, ProductError, SceneReadError

log = logging.getLogger(__name__)

MASK_CLASSES = ("clouds", "shadow", "snow")
DEFAULT_MASK = "clouds,shadow"

# Landsat Collection 2 QA_PIXEL bits (USGS).
QA_FILL, QA_DILATED_CLOUD, QA_CIRRUS, QA_CLOUD, QA_SHADOW, QA_SNOW = 0, 1, 2, 3, 4, 5
# Sentinel-2 L2A scene classification classes (ESA).
SCL_NO_DATA, SCL_DEFECTIVE, SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 0, 1, 3, 8, 9, 10, 11

LANDSAT_OLI_ROLES = {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir", 6: "swir1", 7: "swir2", 9: "cirrus"}
LANDSAT_TM_ROLES = {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir1", 7: "swir2"}
SENTINEL2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
SENTINEL2_ROLES = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
    "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "watervapour", "B10": "cirrus", "B11": "swir1",
    "B12": "swir2",
}
STAC_COMMON_NAMES = {
    "coastal": "coastal", "blue": "blue", "green": "green", "red": "red", "rededge": "rededge1",
    "rededge071": "rededge1", "rededge075": "rededge2", "rededge078": "rededge3", "nir": "nir", "nir08": "nir08",
    "nir09": "watervapour", "cirrus": "cirrus", "swir16": "swir1", "swir22": "swir2", "pan": "pan",
}

_LANDSAT_ID = re.compile(
    r"^(L[CEMOT]\d{2}_L[12][A-Z]{2}_\d{6}_\d{8}_\d{8}_\d{2}_[A-Z0-9]{2}|L[CEMOT]\d{14}[A-Z]{3}\d{2})", re.I)
_LANDSAT_BAND = re.compile(r"_(SR_)?B(\d{1,2})\.TIF{1,2}$", re.I)
_LANDSAT_QA = re.compile(r"_QA_PIXEL\.TIF{1,2}$", re.I)
_LANDSAT_RADSAT = re.compile(r"_QA_RADSAT\.TIF{1,2}$", re.I)
_S2_FILE = re.compile(r"^(?P<key>.*?)_?(?P<band>B0[1-9]|B1[0-2]|B8A|SCL)(?:_(?P<res>\d0)m)?\.(jp2|tif|tiff)$", re.I)
_S2_MTD = re.compile(r"^MTD_MSIL(1C|2A)\.xml$", re.I)
_S2_CLASSI = re.compile(r"^MSK_CLASSI_B00\.(jp2|tif|tiff)$", re.I)


@dataclass(frozen=True)
class ProductBand:
    """One band file of a product: its name in the product ('B02', 'SR_B5'), role and DN → reflectance."""

    name: str
    role: str | None
    href: str  # a local path or anything GDAL opens (/vsicurl/...)
    scale: float | None = None
    offset: float | None = None


@dataclass(frozen=True)
class QualityLayer:
    """A quality layer and how to decode it: 'qa_pixel' (Landsat C2), 'scl' (S2 L2A), 'classi' (S2 L1C)."""

    href: str
    kind: str


@dataclass(frozen=True)
class Product:
    """A product found on disk (or in a STAC item), before its bands are stacked."""

    path: Path  # what the user gave (folder, metadata file, band file, item JSON)
    product_id: str
    kind: str  # 'landsat' | 'sentinel2' | 'stac'
    sensor: str | None  # 'landsat_oli' | 'landsat_tm' | 'sentinel2' | None
    platform: str | None
    datetime: dt.datetime | None
    level: str | None  # 'L1' | 'L2' (Landsat), 'L1C' | 'L2A' (Sentinel-2)
    bands: tuple[ProductBand, ...]
    quality: QualityLayer | None = None
    saturation: str | None = None  # Landsat QA_RADSAT (bit n-1: band n saturated)
    scaling_source: str = ""
    scaling_detail: str = ""
    properties: dict = field(default_factory=dict, compare=False)  # extra STAC properties to pass on

    @property
    def roles(self) -> tuple[str | None, ...]:
        return tuple(b.role for b in self.bands)

    @property
    def has_scaling(self) -> bool:
        return all(b.scale is not None and b.offset is not None for b in self.bands)


@dataclass(frozen=True)
class Grid:
    """The grid the bands are stacked on (the finest band's)."""

    width: int
    height: int
    transform: Affine
    crs: rasterio.crs.CRS | None
    dtype: str


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


# ---------------------------------------------------------------------------------------------- --mask


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


# ---------------------------------------------------------------------------------------------- quality


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


# ---------------------------------------------------------------------------------------------- recognizing


_WARNED: set[tuple[str, str]] = set()


def _warn_once(folder: Path, message: str) -> None:
    """A product's warning once per process (a product is recognized several times per prediction)."""
    key = (str(folder.resolve()), message)
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, folder)


def _err_unreadable(path: Path, what: str, exc: BaseException | str) -> ProductError:
    return ProductError(f"cannot read the {what} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                        path=path, fix="use the product's original metadata file (re-download the product)")


def find_product(path: str | os.PathLike) -> Product | None:
    """The product ``path`` names, or None when it is a plain raster (a GeoTIFF or VRT, read as today)."""
    text = os.fspath(path)
    if "#" in text and text.split("#", 1)[0].lower().endswith(".json"):
        file, _, item_id = text.partition("#")
        return _stac_product(Path(file), item_id)
    path = Path(text)
    if path.is_dir():
        return _folder_product(path)
    if not path.is_file():
        return None
    name = path.name
    if re.search(r"_MTL\.(txt|json)$", name, re.I):
        return _landsat_product(path.parent, mtl=path, given=path)
    if _S2_MTD.match(name):
        return _sentinel2_product(path.parent, given=path)
    if name.lower().endswith(".json"):
        return _stac_product(path, None)
    if (_LANDSAT_BAND.search(name) or _LANDSAT_QA.search(name)) and _LANDSAT_ID.match(name):
        return _landsat_product(path.parent, product_id=_LANDSAT_ID.match(name).group(1), given=path)
    if _S2_FILE.match(name) and not re.search(r"_(B\d+){2,}", name, re.I):
        return _sentinel2_product(path.parent, given=path, key=_S2_FILE.match(name).group("key"))
    return None


def _folder_product(folder: Path) -> Product | None:
    files = [p for p in folder.iterdir() if p.is_file()]
    if folder.name.upper().endswith(".SAFE") or any(_S2_MTD.match(p.name) for p in files):
        return _sentinel2_product(folder, given=folder)
    if any(re.search(r"_MTL\.(txt|json)$", p.name, re.I) for p in files) or any(
            _LANDSAT_BAND.search(p.name) and _LANDSAT_ID.match(p.name) for p in files):
        return _landsat_product(folder, given=folder)
    if any(_S2_FILE.match(p.name) for p in files):
        return _sentinel2_product(folder, given=folder)
    return None


def is_product_folder(folder: Path) -> bool:
    """Whether a folder is one product (batch discovery treats it as one scene)."""
    try:
        return _folder_product(folder) is not None
    except ProductError:
        return True  # a broken product is still one scene: it fails as one


# ---------------------------------------------------------------------------------------------- Landsat


def read_mtl_file(path: Path) -> dict[str, str]:
    """``KEY: value`` of a Landsat MTL (.txt ODL or .json), Level-2 reflectance keys prefixed ``L2:`` as
    :func:`eoseg.radiometry.read_mtl` does. Raises :class:`ProductError` if it is not an MTL."""
    from eoseg.radiometry import read_mtl

    try:
        if path.suffix.lower() == ".json":
            values = _flatten_mtl_json(json.loads(path.read_text(encoding="utf-8")))
        else:
            values = read_mtl(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise _err_unreadable(path, "Landsat MTL", exc) from None
    if not any(k in values for k in ("LANDSAT_PRODUCT_ID", "LANDSAT_SCENE_ID", "SPACECRAFT_ID")):
        raise ProductError("is not a Landsat MTL file (no LANDSAT_PRODUCT_ID, LANDSAT_SCENE_ID or SPACECRAFT_ID)",
                           path=path, fix="use the product's original _MTL.txt or _MTL.json (re-download it)")
    return values


def _flatten_mtl_json(data: dict, groups: tuple[str, ...] = ()) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            values.update(_flatten_mtl_json(value, (*groups, key)))
        else:
            prefix = "L2:" if any(g.startswith("LEVEL2") for g in groups) else ""
            values[prefix + key] = str(value)
    return values


def _landsat_files(folder: Path, product_id: str | None) -> tuple[str, dict[int, Path], dict[int, Path], dict]:
    """``(product id, L1 band files, SR band files, {qa, radsat})``; refuses band files of two products."""
    ids: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        match = _LANDSAT_ID.match(p.name)
        if match and (_LANDSAT_BAND.search(p.name) or _LANDSAT_QA.search(p.name) or _LANDSAT_RADSAT.search(p.name)):
            ids.setdefault(match.group(1).upper(), []).append(p)
    if product_id is None:
        if len(ids) > 1:
            first, other = sorted(ids)[:2]
            raise ProductError(f"holds band files of two products ({first} and {other}, e.g. {ids[other][0].name})",
                               path=folder, fix="keep one product per folder, or pass the product's MTL file")
        product_id = next(iter(ids), None)
    elif len(ids) > 1:
        others = [f for pid, fs in ids.items() if pid != product_id.upper() for f in fs]
        log.info("%s: ignoring %d band file(s) of other products", folder, len(others))
    l1: dict[int, Path] = {}
    sr: dict[int, Path] = {}
    qa: dict[str, Path] = {}
    for p in ids.get((product_id or "").upper(), []):
        band = _LANDSAT_BAND.search(p.name)
        if band:
            (sr if band.group(1) else l1)[int(band.group(2))] = p
        elif _LANDSAT_QA.search(p.name):
            qa["qa"] = p
        elif _LANDSAT_RADSAT.search(p.name):
            qa["radsat"] = p
    if product_id is None:
        raise ProductError("holds no Landsat band files (<product id>_B<n>.TIF or _SR_B<n>.TIF)", path=folder,
                           fix="pass the folder that holds the product's band files")
    return product_id, l1, sr, qa


def _landsat_product(folder: Path, *, given: Path, mtl: Path | None = None, product_id: str | None = None) -> Product:
    if mtl is not None:
        product_id = mtl.name[: mtl.name.upper().rindex("_MTL")]
    found_id, l1, sr, qa = _landsat_files(folder, product_id)
    if mtl is None:
        mtl = next((p for p in sorted(folder.glob("*_MTL.*")) if p.name.upper().startswith(found_id.upper())
                    and p.suffix.lower() in (".txt", ".json")), None)
    values = read_mtl_file(mtl) if mtl is not None else {}
    if mtl is not None and mtl.suffix.lower() == ".json" and (mtl.with_suffix(".txt")).exists():
        pass  # either says the same; the one given wins
    spacecraft = values.get("SPACECRAFT_ID", "")
    number = re.search(r"(\d)$", spacecraft) or re.match(r"L[CEMOT]0?(\d)", found_id, re.I)
    sensor = "landsat_oli" if number and number.group(1) in "89" else "landsat_tm" if number else None
    roles = LANDSAT_OLI_ROLES if sensor == "landsat_oli" else LANDSAT_TM_ROLES
    level = "L2" if sr or values.get("PROCESSING_LEVEL", "").upper().startswith("L2") else "L1"
    files = sr if level == "L2" else l1
    if not files:
        raise ProductError(f"holds no {'surface reflectance (_SR_B<n>)' if level == 'L2' else '_B<n>'} band files "
                           f"of {found_id}", path=given, fix="pass the folder that holds the product's band files")
    bands, source, detail = _landsat_scaling(files, roles, values, level, mtl, given)
    when = _landsat_datetime(values, found_id)
    quality = QualityLayer(str(qa["qa"]), "qa_pixel") if "qa" in qa else None
    if quality is None:
        _warn_once(folder, "%s: no QA_PIXEL file; clouds are not masked")
    return Product(path=given, product_id=values.get("LANDSAT_PRODUCT_ID", found_id) or found_id, kind="landsat",
                   sensor=sensor, platform=(spacecraft or None) and spacecraft.lower().replace("_", "-"),
                   datetime=when, level=level, bands=bands, quality=quality,
                   saturation=str(qa["radsat"]) if quality is not None and "radsat" in qa else None,
                   scaling_source=source,
                   scaling_detail=detail)


def _landsat_scaling(files: dict[int, Path], roles: dict[int, str], mtl: dict[str, str], level: str,
                     mtl_path: Path | None, given: Path) -> tuple[tuple[ProductBand, ...], str, str]:
    from eoseg.radiometry import LANDSAT_L2_OFFSET, LANDSAT_L2_SCALE

    bands = []
    if level == "L2":
        for n in sorted(files):
            if n not in roles:
                continue
            scale = float(mtl.get(f"L2:REFLECTANCE_MULT_BAND_{n}", LANDSAT_L2_SCALE))
            offset = float(mtl.get(f"L2:REFLECTANCE_ADD_BAND_{n}", LANDSAT_L2_OFFSET))
            bands.append(ProductBand(f"SR_B{n}", roles[n], str(files[n]), scale, offset))
        return tuple(bands), "landsat-c2-l2", "Landsat Collection 2 Level-2 surface reflectance " + (
            f"(REFLECTANCE_MULT/ADD of {mtl_path.name})" if mtl_path else "(× 0.0000275 − 0.2, USGS)")
    sun = None
    if mtl_path is not None:
        try:
            sun = math.radians(float(mtl["SUN_ELEVATION"]))
        except (KeyError, ValueError):
            raise ProductError(f"{mtl_path.name} has no SUN_ELEVATION", path=mtl_path,
                               fix="use the product's original MTL file") from None
    for n in sorted(files):
        if n not in roles:
            continue
        scale = offset = None
        if sun is not None:
            mult, add = mtl.get(f"REFLECTANCE_MULT_BAND_{n}"), mtl.get(f"REFLECTANCE_ADD_BAND_{n}")
            if mult is None or add is None:
                raise ProductError(f"{mtl_path.name} has no REFLECTANCE_MULT/ADD_BAND_{n}", path=mtl_path,
                                   fix="use the product's original MTL file")
            scale, offset = float(mult) / math.sin(sun), float(add) / math.sin(sun)  # as eoseg.radiometry._from_mtl
        bands.append(ProductBand(f"B{n}", roles[n], str(files[n]), scale, offset))
    detail = (f"Landsat Level-1 REFLECTANCE_MULT/ADD and SUN_ELEVATION {math.degrees(sun):.2f}° from {mtl_path.name}"
              if sun is not None else "no MTL: Level-1 digital numbers without scaling")
    return tuple(bands), "landsat-l1-mtl", detail


def _landsat_datetime(mtl: dict[str, str], product_id: str) -> dt.datetime | None:
    date = mtl.get("DATE_ACQUIRED")
    time = mtl.get("SCENE_CENTER_TIME", "00:00:00Z")
    if date:
        try:
            return dt.datetime.fromisoformat(f"{date}T{time.rstrip('Z')[:15]}").replace(tzinfo=dt.UTC)
        except ValueError:
            pass
    match = re.match(r"L[CEMOT]\d{2}_L[12][A-Z]{2}_\d{6}_(\d{8})", product_id) or None
    if match:
        return dt.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=dt.UTC)
    match = re.match(r"L[CEMOT]\d{7}(\d{4})(\d{3})", product_id)
    if match:
        return dt.datetime.strptime(match.group(1) + match.group(2), "%Y%j").replace(tzinfo=dt.UTC)
    return None


# ---------------------------------------------------------------------------------------------- Sentinel-2


def _s2_metadata(mtd: Path) -> dict:
    """What is read from ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``: baseline, quantification, offsets, time."""
    try:
        root = ET.parse(mtd).getroot()
    except (ET.ParseError, OSError) as exc:
        raise _err_unreadable(mtd, "Sentinel-2 product metadata", exc) from None

    def first(*tags: str) -> str | None:
        for el in root.iter():
            if el.tag.rsplit("}", 1)[-1] in tags and el.text and el.text.strip():
                return el.text.strip()
        return None

    offsets = {}
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET") and el.get("band_id") is not None:
            offsets[SENTINEL2_BANDS[int(el.get("band_id"))]] = float(el.text)
    quantification = first("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE")
    if quantification is None:
        raise ProductError("has no QUANTIFICATION_VALUE", path=mtd, fix="use the product's original metadata file")
    return {"baseline": first("PROCESSING_BASELINE"), "quantification": float(quantification), "offsets": offsets,
            "start": first("PRODUCT_START_TIME", "DATATAKE_SENSING_START"), "type": first("PRODUCT_TYPE"),
            "spacecraft": first("SPACECRAFT_NAME"), "uri": first("PRODUCT_URI")}


def _s2_files(folder: Path, key: str | None) -> tuple[str, dict[str, tuple[int, Path]], Path | None]:
    """``(key, {band: (resolution m or 0, file)}, classi mask)``: the finest file of each band, one product."""
    found: dict[str, dict[str, tuple[int, Path]]] = {}
    classi = None
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        if _S2_CLASSI.match(p.name):
            classi = p
            continue
        match = _S2_FILE.match(p.name)
        if not match or re.search(r"_(B\d+){2,}", p.name, re.I) or p.name.upper().startswith("MSK_"):
            continue  # per-band quality masks (MSK_DETFOO_B02, MSK_QUALIT_B02) are not bands
        band, res = match.group("band").upper(), int(match.group("res") or 0)
        files = found.setdefault(match.group("key").upper(), {})
        if band not in files or res < files[band][0]:
            files[band] = (res, p)
    if key is None:
        if len(found) > 1:
            first, other = sorted(found)[:2]
            raise ProductError(f"holds band files of two products ({first or '<no prefix>'} and {other}, e.g. "
                               f"{next(iter(found[other].values()))[1].name})", path=folder,
                               fix="keep one product per folder")
        key = next(iter(found), "")
    return key, found.get(key.upper(), {}), classi


def _sentinel2_product(folder: Path, *, given: Path, key: str | None = None) -> Product:
    from eoseg.radiometry import SENTINEL2_OFFSET, SENTINEL2_OFFSET_BASELINE, sentinel2_offset

    mtd = next((p for p in sorted(folder.iterdir()) if _S2_MTD.match(p.name)), None)
    meta = _s2_metadata(mtd) if mtd is not None else {}
    key, files, classi = _s2_files(folder, key)
    if not files:
        raise ProductError("holds no Sentinel-2 band files (…_B02.jp2, B02.tif, …_B02_10m.jp2)", path=given,
                           fix="pass the .SAFE folder, its MTD_MSIL*.xml or a folder of per-band files")
    level = "L2A" if "SCL" in files or "2A" in (meta.get("type") or "") else "L1C"
    q = meta.get("quantification", 10000.0)
    baseline = meta.get("baseline")
    name_text = " ".join([folder.name, meta.get("uri") or ""])
    offsets: dict[str, float] = meta.get("offsets") or {}
    if offsets:
        default_offset, why = 0.0, "BOA/RADIO_ADD_OFFSET of " + mtd.name
    elif baseline is not None:
        default_offset = SENTINEL2_OFFSET if float(baseline) >= SENTINEL2_OFFSET_BASELINE else 0.0
        why = f"processing baseline {baseline} ({mtd.name})"
    else:
        found, why = sentinel2_offset({}, [], name_text)
        default_offset = float(found) if isinstance(found, int | float) else 0.0
    bands = tuple(ProductBand(b, SENTINEL2_ROLES[b], str(files[b][1]), 1 / q, offsets.get(b, default_offset) / q)
                  for b in SENTINEL2_BANDS if b in files)
    quality = None
    if "SCL" in files:
        quality = QualityLayer(str(files["SCL"][1]), "scl")
    elif classi is not None:
        quality = QualityLayer(str(classi), "classi")
    else:
        _warn_once(folder, "%s: no SCL or MSK_CLASSI layer (L1C products before processing baseline 04.00 carry "
                           "GML cloud masks, which are not read); clouds are not masked")
    spacecraft = meta.get("spacecraft")
    product_id = (meta.get("uri") or (folder.name if folder.name.upper().endswith(".SAFE") else "")).removesuffix(
        ".SAFE") or key.strip("_") or folder.name
    return Product(path=given, product_id=product_id, kind="sentinel2", sensor="sentinel2",
                   platform=spacecraft.lower() if spacecraft else None,
                   datetime=_s2_datetime(meta.get("start"), " ".join([key, folder.name])), level=level,
                   bands=bands, quality=quality, scaling_source="sentinel2",
                   scaling_detail=f"Sentinel-2 digital numbers ÷ {q:g} (QUANTIFICATION_VALUE"
                                  f"{' of ' + mtd.name if mtd else ', default'}); offset from {why}")


def _s2_datetime(start: str | None, text: str) -> dt.datetime | None:
    if start:
        try:
            return dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            pass
    match = re.search(r"(20\d{6})T(\d{6})", text) or re.search(r"(?<!\d)(20\d{6})(?!\d)", text)
    if not match:
        return None
    stamp = match.group(1) + (match.group(2) if match.lastindex == 2 else "000000")
    return dt.datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------- STAC


def _stac_items(data: dict, path: Path) -> list[dict]:
    kind = data.get("type")
    if kind == "Feature":
        return [data]
    if kind == "FeatureCollection":
        return list(data.get("features") or [])
    raise ProductError(f"is not a STAC Item or ItemCollection (type {kind!r})", path=path,
                       fix="pass a STAC Item JSON file (or a catalog to eoseg batch)")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _err_unreadable(path, "JSON file", exc) from None


def _stac_product(path: Path, item_id: str | None) -> Product:
    data = read_json(path)
    items = _stac_items(data, path)
    if item_id:
        items = [i for i in items if i.get("id") == item_id]
        if not items:
            raise ProductError(f"has no item {item_id!r}", path=path, fix="check the item id after '#'")
    elif len(items) != 1:
        raise ProductError(f"holds {len(items)} items; predict takes one scene", path=path,
                           fix="use eoseg batch for an ItemCollection, or name one item as FILE.json#ITEM_ID")
    return stac_item_product(items[0], path, given=Path(f"{path}#{item_id}") if item_id else path)


def _href(href: str, base: Path) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*://", href, re.I):
        scheme = href.split("://", 1)[0].lower()
        if scheme in ("http", "https"):
            return "/vsicurl/" + href
        if scheme in ("s3", "gs"):
            return f"/vsi{scheme}/" + href.split("://", 1)[1]
        if scheme == "file":
            return href[len("file://"):]
        return href
    if href.startswith("/vsi") or os.path.isabs(href):
        return href
    return str((base.parent / href).resolve())


def stac_item_product(item: dict, path: Path, given: Path) -> Product:
    """A product from a STAC Item's assets (roles from ``eo:bands`` / ``bands`` common names or asset keys)."""
    props = item.get("properties") or {}
    platform = str(props.get("platform") or "").lower() or None
    sensor = "sentinel2" if platform and "sentinel-2" in platform else (
        "landsat_oli" if platform and re.search(r"landsat-?[89]", platform) else
        "landsat_tm" if platform and re.search(r"landsat-?[457]", platform) else None)
    bands: list[ProductBand] = []
    quality = None
    for key, asset in (item.get("assets") or {}).items():
        href = asset.get("href")
        if not href:
            continue
        lowered = key.lower()
        if lowered.startswith(("scl", "qa_pixel")) or (lowered == "qa" and sensor and sensor.startswith("landsat")):
            if quality is None:  # the first of duplicates ('scl', 'scl-jp2')
                quality = QualityLayer(_href(href, path), "scl" if lowered.startswith("scl") else "qa_pixel")
            continue
        eo = asset.get("eo:bands") or asset.get("bands") or []
        common = (eo[0].get("common_name") or eo[0].get("eo:common_name")) if len(eo) == 1 else None
        name = (eo[0].get("name") if len(eo) == 1 else None) or key
        role = STAC_COMMON_NAMES.get(str(common or "").lower()) or STAC_COMMON_NAMES.get(lowered) or (
            SENTINEL2_ROLES.get(name.upper()) if sensor == "sentinel2" else None)
        if role is None or "data" not in (asset.get("roles") or ["data"]) or any(b.role == role for b in bands):
            continue  # not a band, or a second copy of one (Earth Search lists 'blue' and 'blue-jp2')
        raster = (asset.get("raster:bands") or [{}])[0] if asset.get("raster:bands") else {}
        scale, offset = raster.get("scale"), raster.get("offset")
        bands.append(ProductBand(name, role, _href(href, path), None if scale is None else float(scale),
                                 None if offset is None else float(offset)))
    if not bands:
        raise ProductError("has no band assets with eo:bands common names (blue, green, red, nir, swir16, …)",
                           path=given, fix="give the item's band assets eo:bands with common_name")
    source, detail = "stac-raster-bands", "raster:bands scale / offset of the STAC item"
    if not all(b.scale is not None for b in bands) and sensor == "sentinel2":
        bands, source, detail = _stac_sentinel2_scaling(bands, props)
    when = props.get("datetime") or props.get("start_datetime")
    cloud = props.get("eo:cloud_cover")
    return Product(path=given, product_id=str(item.get("id") or path.stem), kind="stac", sensor=sensor,
                   platform=platform, datetime=dt.datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None,
                   level=None, bands=tuple(bands), quality=quality, scaling_source=source, scaling_detail=detail,
                   properties={"source_eo:cloud_cover": cloud} if cloud is not None else {})


def _stac_sentinel2_scaling(bands: list[ProductBand], props: dict) -> tuple[list[ProductBand], str, str]:
    from eoseg.radiometry import SENTINEL2_OFFSET, SENTINEL2_OFFSET_BASELINE, SENTINEL2_QUANTIFICATION

    baseline = props.get("s2:processing_baseline") or props.get("processing:version")
    offset = SENTINEL2_OFFSET if baseline is not None and float(baseline) >= SENTINEL2_OFFSET_BASELINE else 0.0
    q = SENTINEL2_QUANTIFICATION
    why = f"processing baseline {baseline}" if baseline is not None else "no processing baseline, so no offset"
    return ([ProductBand(b.name, b.role, b.href, 1 / q, offset / q) for b in bands], "sentinel2",
            f"Sentinel-2 digital numbers ÷ {q:g} (STAC item); {why}")


# ---------------------------------------------------------------------------------------------- stacking


def _open_band(href: str, given: Path) -> rasterio.io.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(href)
    except RasterioError as exc:
        raise SceneReadError(f"cannot open band file {Path(href).name} ({str(exc).splitlines()[0]})", path=given,
                             fix="re-download the product's band file") from None


def _band_grids(hrefs: Iterable[str], given: Path) -> list[tuple[str, Affine, int, int, object, str, int]]:
    grids = []
    for href in hrefs:
        with _open_band(href, given) as ds:
            grids.append((href, ds.transform, ds.width, ds.height, ds.crs, ds.dtypes[0], ds.count))
    return grids


def stack_grid(product: Product, wanted: Sequence[int] | None = None) -> Grid:
    """The finest band's grid; refuses bands on different CRSs or not on one grid."""
    bands = [product.bands[i] for i in (wanted or range(len(product.bands)))]
    grids = _band_grids([b.href for b in bands], product.path)
    ref = min(grids, key=lambda g: abs(g[1].a))
    crs = ref[4]
    for (href, transform, _, _, band_crs, _, _), band in zip(grids, bands, strict=True):
        if band_crs != crs:
            raise GeoreferenceError(
                f"band {band.name} ({Path(href).name}) is on {band_crs.to_string() if band_crs else 'no CRS'}, the "
                f"other bands on {crs.to_string() if crs else 'no CRS'}", path=product.path,
                fix="bands of one scene must share a CRS: reproject them (gdalwarp -t_srs) or use one product's files")
        ratio = abs(transform.a / ref[1].a)
        shift = ((transform.c - ref[1].c) / ref[1].a, (transform.f - ref[1].f) / ref[1].e)
        if abs(ratio - round(ratio)) > 1e-6 or any(abs(s - round(s)) > 1e-6 for s in shift) or transform.b or \
                transform.d:
            raise GeoreferenceError(f"band {band.name} ({Path(href).name}) is not on the grid of the finest band",
                                    path=product.path, fix="use bands of one product (a whole multiple of the finest "
                                                           "pixel size, on the same origin)")
    dtypes = {g[5] for g in grids}
    dtype = dtypes.pop() if len(dtypes) == 1 else "float32"
    return Grid(ref[2], ref[3], ref[1], crs, dtype)


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64"}


def _source_xml(href: str, band: int, transform: Affine, width: int, height: int, grid: Grid) -> str:
    x_off = (transform.c - grid.transform.c) / grid.transform.a
    y_off = (transform.f - grid.transform.f) / grid.transform.e
    x_size = width * transform.a / grid.transform.a
    y_size = height * transform.e / grid.transform.e
    return (f'<SimpleSource resampling="nearest"><SourceFilename relativeToVRT="0">{escape(href)}</SourceFilename>'
            f'<SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="{x_off:.10g}" yOff="{y_off:.10g}" xSize="{x_size:.10g}" ySize="{y_size:.10g}"/>'
            f'</SimpleSource>')


def _vrt(grid: Grid, bands_xml: list[str], metadata: dict[str, str]) -> str:
    srs = f"<SRS>{escape(grid.crs.to_wkt())}</SRS>" if grid.crs else ""
    gt = ", ".join(f"{v:.17g}" for v in grid.transform.to_gdal())
    mdi = "".join(f'<MDI key="{escape(k)}">{escape(str(v))}</MDI>' for k, v in metadata.items())
    return (f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">{srs}<GeoTransform>{gt}'
            f'</GeoTransform><Metadata>{mdi}</Metadata>{"".join(bands_xml)}</VRTDataset>')


def band_vrt(product: Product, grid: Grid) -> str:
    """The product's bands stacked on ``grid`` as VRT XML (descriptions are the band names, nodata 0: Landsat
    and Sentinel-2 products write fill as 0)."""
    grids = _band_grids([b.href for b in product.bands], product.path)
    xml = []
    for i, (band, (href, transform, width, height, _, _, _)) in enumerate(zip(product.bands, grids, strict=True)):
        xml.append(f'<VRTRasterBand dataType="{_GDAL_TYPES.get(grid.dtype, "Float32")}" band="{i + 1}">'
                   f"<Description>{escape(band.name)}</Description><NoDataValue>0</NoDataValue>"
                   + _source_xml(href, 1, transform, width, height, grid) + "</VRTRasterBand>")
    meta = {"PRODUCT_ID": product.product_id, "SENSOR": product.sensor or "", "PLATFORM": product.platform or ""}
    if product.datetime is not None:
        meta["ACQUISITION_DATETIME"] = product.datetime.isoformat()
    return _vrt(grid, xml, meta)


def quality_vrt(product: Product, grid: Grid) -> str | None:
    """The quality layer on ``grid`` (nearest: codes are not interpolated) as VRT XML, or None."""
    if product.quality is None:
        return None
    with _open_band(product.quality.href, product.path) as ds:
        transform, width, height, count, dtype, crs = ds.transform, ds.width, ds.height, ds.count, ds.dtypes[0], ds.crs
    if grid.crs is not None and crs != grid.crs:
        raise GeoreferenceError(f"the quality layer {Path(product.quality.href).name} is on another CRS than the bands",
                                path=product.path, fix="use the product's own quality layer")
    layers = [(product.quality.href, b, transform, width, height, dtype) for b in range(1, count + 1)]
    if product.saturation is not None:
        with _open_band(product.saturation, product.path) as ds:
            layers.append((product.saturation, 1, ds.transform, ds.width, ds.height, ds.dtypes[0]))
    xml = [f'<VRTRasterBand dataType="{_GDAL_TYPES.get(dtype, "UInt16")}" band="{i}">'
           + _source_xml(href, b, transform, width, height, grid) + "</VRTRasterBand>"
           for i, (href, b, transform, width, height, dtype) in enumerate(layers, start=1)]
    return _vrt(grid, xml, {})


def saturation_bits(product: Product, band_indexes: Sequence[int]) -> int:
    """``QA_RADSAT`` bits of the bands the model reads (bit n − 1 for band n), 0 without the layer."""
    if product.saturation is None:
        return 0
    bits = 0
    for i in band_indexes:
        number = re.search(r"(\d+)$", product.bands[i - 1].name)
        if number:
            bits |= 1 << (int(number.group(1)) - 1)
    return bits


def _band_code(role: str, product: Product) -> str | None:
    if product.sensor == "sentinel2":
        table = {r: b for b, r in SENTINEL2_ROLES.items()}
    elif product.sensor in ("landsat_oli", "landsat_tm"):
        roles = LANDSAT_OLI_ROLES if product.sensor == "landsat_oli" else LANDSAT_TM_ROLES
        table = {r: ("SR_B" if product.level == "L2" else "B") + str(n) for n, r in roles.items()}
    else:
        table = {}
    return table.get(role)


def missing_band_error(product: Product, missing: Sequence[str], wanted: Sequence[str]) -> BandMappingError:
    have = ", ".join(f"{b.name}({b.role})" for b in product.bands)
    names = ", ".join(f"{r} band ({_band_code(r, product)})" if _band_code(r, product) else f"{r} band"
                      for r in missing)
    kind = {"sentinel2": "Sentinel-2", "landsat": "Landsat", "stac": "STAC"}.get(product.kind, product.kind)
    return BandMappingError(
        f"the {kind} product {product.product_id} has no {names} (it has {have})", path=product.path,
        fix=f"add the band file(s), or use a model that takes {', '.join(r for r in wanted if r not in missing)} only")


# ---------------------------------------------------------------------------------------------- reporting


def mask_fractions(scene, rows: int = 512) -> MaskFractions | None:
    """Fill, cloud, shadow and snow fractions of a product scene's quality layer, read strip by strip (None when
    the scene has no quality layer or ``--mask none``). Cloud / shadow / snow are fractions of the non-fill
    pixels; ``valid`` is the fraction of all pixels neither fill nor masked."""
    if scene.mask is None:
        return None
    from rasterio.windows import Window

    counts = dict.fromkeys(("fill", "clouds", "shadow", "snow", "masked"), 0)
    bits = scene.mask.saturation_bits
    with rasterio.open(scene.mask.source) as ds:
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
