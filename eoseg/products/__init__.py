"""Archive products as scenes: Landsat Collection 2 folders, Sentinel-2 products and STAC items.

:func:`find_product` recognizes what a user hands over — a Landsat product folder, its ``_MTL.txt`` /
``_MTL.json`` or any of its band files (:mod:`.landsat`); a Sentinel-2 ``.SAFE`` folder, its ``MTD_MSIL*.xml``
or a folder of per-band files (:mod:`.sentinel2`); a STAC Item (or one item of an ItemCollection) JSON
(:mod:`.stac`) — and returns a :class:`Product`: the band files with their roles, the reflectance scaling the
product metadata gives, the quality layers and what the product says about itself (id, sensor, acquisition
time). :mod:`.stack` stacks the bands as a GDAL VRT read window by window (20 m bands resampled to 10 m by
nearest neighbour; the module says why); :mod:`.quality` decodes QA_PIXEL / QA_RADSAT / SCL / MSK_CLASSI
and the L1C GML cloud polygons (:mod:`.gml`, rasterized window by window) into the pixels ``--mask`` makes nodata
and the fractions reported per scene.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from eoseg.products.base import (
    LANDSAT_BAND,
    LANDSAT_ID,
    LANDSAT_QA,
    S2_FILE,
    S2_MTD,
    Product,
    ProductBand,
    QualityLayer,
    read_json,
)
from eoseg.products.landsat import landsat_product, read_mtl_file
from eoseg.products.quality import (
    DEFAULT_MASK,
    MASK_CLASSES,
    QA_CIRRUS,
    QA_CLOUD,
    QA_DILATED_CLOUD,
    QA_FILL,
    QA_SHADOW,
    QA_SNOW,
    MaskFractions,
    mask_fractions,
    masked_pixels,
    open_quality_layer,
    parse_mask,
    product_info,
    quality_flags,
    scene_quality,
    stac_properties,
)
from eoseg.products.sentinel2 import sentinel2_product
from eoseg.products.stac import stac_file_product, stac_item_product
from eoseg.products.stack import (
    Grid,
    band_vrt,
    missing_band_error,
    quality_source,
    quality_vrt,
    saturation_bits,
    stack_grid,
)

__all__ = [
    "DEFAULT_MASK", "MASK_CLASSES", "QA_CIRRUS", "QA_CLOUD", "QA_DILATED_CLOUD", "QA_FILL", "QA_SHADOW", "QA_SNOW",
    "Grid", "MaskFractions", "Product", "ProductBand", "QualityLayer", "band_vrt", "find_product", "mask_fractions",
    "masked_pixels", "missing_band_error", "open_quality_layer", "parse_mask", "product_info", "quality_flags",
    "quality_source", "quality_vrt", "read_json",
    "read_mtl_file", "saturation_bits", "scene_quality", "stac_item_product", "stac_properties", "stack_grid",
]


def find_product(path: str | os.PathLike) -> Product | None:
    """The product ``path`` names, or None when it is a plain raster (a GeoTIFF or VRT, read as today)."""
    text = os.fspath(path)
    if "#" in text and text.split("#", 1)[0].lower().endswith(".json"):
        file, _, item_id = text.partition("#")
        return stac_file_product(Path(file), item_id)
    path = Path(text)
    if path.is_dir():
        return _folder_product(path)
    if not path.is_file():
        return None
    name = path.name
    if re.search(r"_MTL\.(txt|json)$", name, re.I):
        return landsat_product(path.parent, mtl=path, given=path)
    if S2_MTD.match(name):
        return sentinel2_product(path.parent, given=path)
    if name.lower().endswith(".json"):
        return stac_file_product(path, None)
    if (LANDSAT_BAND.search(name) or LANDSAT_QA.search(name)) and LANDSAT_ID.match(name):
        return landsat_product(path.parent, product_id=LANDSAT_ID.match(name).group(1), given=path)
    if S2_FILE.match(name) and not re.search(r"_(B\d+){2,}", name, re.I):
        return sentinel2_product(path.parent, given=path, key=S2_FILE.match(name).group("key"))
    return None


def _folder_product(folder: Path) -> Product | None:
    files = [p for p in folder.iterdir() if p.is_file()]
    if folder.name.upper().endswith(".SAFE") or any(S2_MTD.match(p.name) for p in files):
        return sentinel2_product(folder, given=folder)
    if any(re.search(r"_MTL\.(txt|json)$", p.name, re.I) for p in files) or any(
            LANDSAT_BAND.search(p.name) and LANDSAT_ID.match(p.name) for p in files):
        return landsat_product(folder, given=folder)
    if any(S2_FILE.match(p.name) for p in files):
        return sentinel2_product(folder, given=folder)
    return None
