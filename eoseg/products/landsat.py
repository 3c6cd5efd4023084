"""Landsat Collection 2 (and pre-collection) Level-1 / Level-2 products: band files, MTL, scaling, QA files."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
from pathlib import Path

from eoseg.errors import ProductError
from eoseg.products.base import (
    LANDSAT_BAND,
    LANDSAT_ID,
    LANDSAT_OLI_ROLES,
    LANDSAT_QA,
    LANDSAT_RADSAT,
    LANDSAT_TM_ROLES,
    Product,
    ProductBand,
    QualityLayer,
    unreadable,
    warn_once,
)

log = logging.getLogger(__name__)


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
        raise unreadable(path, "Landsat MTL", exc) from None
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
        match = LANDSAT_ID.match(p.name)
        if match and (LANDSAT_BAND.search(p.name) or LANDSAT_QA.search(p.name) or LANDSAT_RADSAT.search(p.name)):
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
        band = LANDSAT_BAND.search(p.name)
        if band:
            (sr if band.group(1) else l1)[int(band.group(2))] = p
        elif LANDSAT_QA.search(p.name):
            qa["qa"] = p
        elif LANDSAT_RADSAT.search(p.name):
            qa["radsat"] = p
    if product_id is None:
        raise ProductError("holds no Landsat band files (<product id>_B<n>.TIF or _SR_B<n>.TIF)", path=folder,
                           fix="pass the folder that holds the product's band files")
    return product_id, l1, sr, qa


def landsat_product(folder: Path, *, given: Path, mtl: Path | None = None, product_id: str | None = None) -> Product:
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
        warn_once(folder, "%s: no QA_PIXEL file; clouds are not masked")
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
