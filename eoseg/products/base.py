"""What a product is (:class:`Product`, its bands and quality layers), the band tables and file-name patterns."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from eoseg.errors import ProductError

log = logging.getLogger(__name__)

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

LANDSAT_ID = re.compile(
    r"^(L[CEMOT]\d{2}_L[12][A-Z]{2}_\d{6}_\d{8}_\d{8}_\d{2}_[A-Z0-9]{2}|L[CEMOT]\d{14}[A-Z]{3}\d{2})", re.I)
LANDSAT_BAND = re.compile(r"_(SR_)?B(\d{1,2})\.TIF{1,2}$", re.I)
LANDSAT_QA = re.compile(r"_QA_PIXEL\.TIF{1,2}$", re.I)
LANDSAT_RADSAT = re.compile(r"_QA_RADSAT\.TIF{1,2}$", re.I)
S2_FILE = re.compile(r"^(?P<key>.*?)_?(?P<band>B0[1-9]|B1[0-2]|B8A|SCL)(?:_(?P<res>\d0)m)?\.(jp2|tif|tiff)$", re.I)
S2_MTD = re.compile(r"^MTD_MSIL(1C|2A)\.xml$", re.I)
S2_CLASSI = re.compile(r"^MSK_CLASSI_B00\.(jp2|tif|tiff)$", re.I)
# L1C before processing baseline 04.00: QI_DATA/MSK_CLOUDS_B00.gml (older "OPER" products:
# S2A_OPER_MSK_CLOUDS_SGS__<time>_A<orbit>_T<tile>_B00_MSIL1C.gml).
S2_CLOUDS_GML = re.compile(r"^(S2[A-D]_OPER_)?MSK_CLOUDS_(\w+_)?B00(_MSIL1C)?\.gml$", re.I)


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
    """A quality layer and how to decode it: 'qa_pixel' (Landsat C2), 'scl' (S2 L2A), 'classi' (S2 L1C raster,
    baseline 04.00 on) or 'msk_clouds' (S2 L1C GML cloud polygons, earlier baselines; see :mod:`.gml`)."""

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


_WARNED: set[tuple[str, str]] = set()


def warn_once(folder: Path, message: str) -> None:
    """A product's warning once per process (a product is recognized several times per prediction)."""
    key = (str(folder.resolve()), message)
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, folder)


def unreadable(path: Path, what: str, exc: BaseException | str) -> ProductError:
    return ProductError(f"cannot read the {what} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                        path=path, fix="use the product's original metadata file (re-download the product)")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise unreadable(path, "JSON file", exc) from None
