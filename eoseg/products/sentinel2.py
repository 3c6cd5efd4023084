"""Sentinel-2 L1C / L2A products: .SAFE folders, MTD_MSIL*.xml, folders of per-band files."""

from __future__ import annotations

import datetime as dt
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from eoseg.errors import ProductError
from eoseg.products.base import (
    S2_CLASSI,
    S2_CLOUDS_GML,
    S2_FILE,
    S2_MTD,
    SENTINEL2_BANDS,
    SENTINEL2_ROLES,
    Product,
    ProductBand,
    QualityLayer,
    unreadable,
    warn_once,
)

log = logging.getLogger(__name__)


def _s2_metadata(mtd: Path) -> dict:
    """What is read from ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``: baseline, quantification, offsets, time."""
    try:
        root = ET.parse(mtd).getroot()
    except (ET.ParseError, OSError) as exc:
        raise unreadable(mtd, "Sentinel-2 product metadata", exc) from None

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


def _s2_files(folder: Path, key: str | None) -> tuple[str, dict[str, tuple[int, Path]], dict[str, Path]]:
    """``(key, {band: (resolution m or 0, file)}, {'classi' | 'msk_clouds': cloud mask file})``: the finest file
    of each band, one product."""
    found: dict[str, dict[str, tuple[int, Path]]] = {}
    masks: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        if S2_CLASSI.match(p.name):
            masks["classi"] = p
            continue
        if S2_CLOUDS_GML.match(p.name):
            masks["msk_clouds"] = p
            continue
        match = S2_FILE.match(p.name)
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
    return key, found.get(key.upper(), {}), masks


def sentinel2_product(folder: Path, *, given: Path, key: str | None = None) -> Product:
    from eoseg.radiometry import SENTINEL2_OFFSET, SENTINEL2_OFFSET_BASELINE, sentinel2_offset

    mtd = next((p for p in sorted(folder.iterdir()) if S2_MTD.match(p.name)), None)
    meta = _s2_metadata(mtd) if mtd is not None else {}
    key, files, masks = _s2_files(folder, key)
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
    elif "classi" in masks:
        quality = QualityLayer(str(masks["classi"]), "classi")
    elif "msk_clouds" in masks:  # L1C before baseline 04.00: cloud polygons (eoseg.products.gml)
        quality = QualityLayer(str(masks["msk_clouds"]), "msk_clouds")
    else:
        warn_once(folder, "%s: no SCL, MSK_CLASSI_B00 raster or MSK_CLOUDS_B00.gml cloud mask; clouds are not "
                          "masked")
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
