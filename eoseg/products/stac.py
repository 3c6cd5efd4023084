"""STAC Items as products: band assets mapped to roles by ``eo:bands`` common names."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from eoseg.errors import ProductError
from eoseg.products.base import SENTINEL2_ROLES, STAC_COMMON_NAMES, Product, ProductBand, QualityLayer, read_json


def _stac_items(data: dict, path: Path) -> list[dict]:
    kind = data.get("type")
    if kind == "Feature":
        return [data]
    if kind == "FeatureCollection":
        return list(data.get("features") or [])
    raise ProductError(f"is not a STAC Item or ItemCollection (type {kind!r})", path=path,
                       fix="pass a STAC Item JSON file (or a catalog to eoseg batch)")


def stac_file_product(path: Path, item_id: str | None) -> Product:
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
