"""A STAC Item describing one scene's outputs (pystac, projection + classification extensions).

The footprint is the raster's outline (densified, so curved edges survive the reprojection) taken to
WGS84 with ``rasterio.warp.transform_geom``; a scene without a CRS gets a null geometry and bbox, as
STAC allows. Asset hrefs are relative to the item file, so the output folder can be moved as a whole.

The item's ``datetime`` is the acquisition time, found in this order (``eoseg:datetime_source`` says
which was used): an explicit ``datetime`` argument; an acquisition tag in the scene (``ACQUISITION*``,
``DATE_ACQUIRED``, ``SENSING_TIME``...); a product identifier in a scene tag (``SCENE``,
``PRODUCT_ID``...); a date in the scene's file name (``YYYY-MM-DD``, ``YYYYMMDD`` or the ``YYYYDOY`` of
a Landsat scene ID such as ``LC81070352015122LGN00``); ``TIFFTAG_DATETIME``; the file's mtime.
``TIFFTAG_DATETIME`` comes late on purpose: TIFF 6.0 defines it as the file's creation time, which
processing tools set to when they wrote the file, so a date in a product name is the better witness.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import numpy as np
import pystac
import rasterio
from affine import Affine
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from eoseg.classes import ClassScheme
from eoseg.errors import OutputError
from eoseg.outputs.atomic import AUX_SUFFIX, atomic_write

UTC = dt.UTC
ACQUISITION_KEYS = ("ACQUISITION", "DATE_ACQUIRED", "SENSING", "SCENE_CENTER_TIME", "START_TIME")
PRODUCT_KEYS = ("SCENE", "PRODUCT", "GRANULE", "TILE_ID", "ENTITY")
MEDIA_TYPES = {
    ".tif": pystac.MediaType.COG, ".tiff": pystac.MediaType.COG,
    ".gpkg": "application/geopackage+sqlite3", ".qml": "text/xml", ".json": "application/json",
}
EDGE_POINTS = 8

_ISO = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}):(\d{2}))?")
_TIFF = re.compile(r"(?<!\d)(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")
_LANDSAT = re.compile(r"L[COTEM]\d(\d{3})(\d{3})(\d{4})(\d{3})[A-Z]{3}\d{2}", re.IGNORECASE)


def _make(parts: tuple[str | None, ...]) -> dt.datetime | None:
    numbers = [int(p) if p else 0 for p in parts]
    while len(numbers) < 6:
        numbers.append(0)
    if not 1950 <= numbers[0] <= 2100:
        return None
    try:
        return dt.datetime(*numbers[:6], tzinfo=UTC)
    except ValueError:
        return None


def _landsat(text: str) -> dt.datetime | None:
    for match in _LANDSAT.finditer(text):
        year, doy = int(match.group(3)), int(match.group(4))
        if 1972 <= year <= 2100 and 1 <= doy <= 366:
            return dt.datetime(year, 1, 1, tzinfo=UTC) + dt.timedelta(days=doy - 1)
    return None


def date_in_text(text: str) -> dt.datetime | None:
    """The first date in ``text``: ISO / TIFF date-time, a Landsat scene ID (YYYYDOY), or YYYYMMDD."""
    for pattern in (_ISO, _TIFF):
        for match in pattern.finditer(text):
            found = _make(match.groups())
            if found:
                return found
    found = _landsat(text)
    if found:
        return found
    for match in _COMPACT.finditer(text):
        found = _make(match.groups())
        if found:
            return found
    return None


def _scene_tags(scene_path: Path) -> dict[str, str]:
    try:
        with rasterio.open(scene_path) as ds:
            return dict(ds.tags())
    except (rasterio.errors.RasterioError, OSError):
        return {}


def _from_tags(tags: dict[str, str], keys: tuple[str, ...]) -> tuple[dt.datetime, str] | None:
    for key, value in tags.items():
        if any(k in key.upper() for k in keys):
            found = date_in_text(str(value))
            if found:
                return found, f"tag:{key}"
    return None


def scene_datetime(scene_path: Path) -> tuple[dt.datetime, str]:
    """``(datetime, source)`` for a scene; see the module docstring for the order of the sources."""
    scene_path = Path(scene_path)
    tags = _scene_tags(scene_path)
    tags_wo_tiff = {k: v for k, v in tags.items() if k.upper() != "TIFFTAG_DATETIME"}
    for keys in (ACQUISITION_KEYS, PRODUCT_KEYS):
        found = _from_tags(tags_wo_tiff, keys)
        if found:
            return found
    found = date_in_text(scene_path.name)
    if found:
        return found, "filename"
    if "TIFFTAG_DATETIME" in tags:
        found = date_in_text(tags["TIFFTAG_DATETIME"])
        if found:
            return found, "tag:TIFFTAG_DATETIME"
    mtime = scene_path.stat().st_mtime if scene_path.exists() else dt.datetime.now(UTC).timestamp()
    return dt.datetime.fromtimestamp(mtime, tz=UTC), "file_mtime"


def footprint(transform: Affine, shape: tuple[int, int], points: int = EDGE_POINTS) -> dict:
    """The raster outline in its CRS as a GeoJSON polygon, ``points`` vertices per edge."""
    h, w = shape
    t = np.linspace(0.0, 1.0, points, endpoint=False)
    cols = np.concatenate([t * w, np.full(points, w), (1 - t) * w, np.zeros(points)])
    rows = np.concatenate([np.zeros(points), t * h, np.full(points, h), (1 - t) * h])
    a, b, c, d, e, f = tuple(transform)[:6]
    xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
    ring = [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def _coords(geometry: dict) -> np.ndarray:
    rings = geometry["coordinates"] if geometry["type"] == "Polygon" else [
        r for poly in geometry["coordinates"] for r in poly]
    return np.array([pt for ring in rings for pt in ring], dtype=float)


def wgs84_geometry(crs: CRS | None, transform: Affine, shape: tuple[int, int]) -> tuple[dict | None, list | None]:
    """``(geometry, bbox)`` in WGS84, or ``(None, None)`` without a CRS."""
    if crs is None:
        return None, None
    geometry = transform_geom(crs, "EPSG:4326", footprint(transform, shape), precision=7)
    xy = _coords(geometry)
    bbox = [float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())]
    return geometry, bbox


def _media_type(path: Path) -> str | None:
    if path.name.endswith(AUX_SUFFIX):
        return "application/xml"
    return MEDIA_TYPES.get(path.suffix.lower())


def _roles(path: Path) -> list[str]:
    if path.suffix.lower() == ".qml":
        return ["style", "metadata"]
    if path.name.endswith(AUX_SUFFIX):
        return ["metadata"]
    return ["data"]


def _relative(target: Path, base_dir: Path) -> str:
    try:
        rel = os.path.relpath(Path(target).resolve(), base_dir.resolve())
    except ValueError:  # another drive on Windows
        return Path(target).resolve().as_uri()
    return rel if rel.startswith(".") else f"./{rel}"


def _classifications(scheme: ClassScheme) -> list[Classification]:
    return [
        Classification.create(value=c.id, name=c.name, description=c.description or None,
                              color_hint=c.hex.lstrip("#").upper())
        for c in scheme.classes
    ]


def _add_projection(item: pystac.Item, crs: CRS | None, transform: Affine, shape: tuple[int, int]) -> None:
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg() if crs is not None else None
    proj.apply(
        code=f"EPSG:{epsg}" if epsg else None,
        wkt2=crs.to_wkt() if crs is not None and not epsg else None,
        shape=[int(shape[0]), int(shape[1])],
        transform=[float(v) for v in tuple(transform)[:6]],
    )


def _add_assets(item: pystac.Item, outputs: dict[str, Path], base_dir: Path, scheme: ClassScheme) -> None:
    for key, file in outputs.items():
        file = Path(file)
        asset = pystac.Asset(href=_relative(file, base_dir), media_type=_media_type(file), roles=_roles(file),
                             title=key.replace("_", " "))
        item.add_asset(key, asset)
    if "classes" in item.assets:
        ClassificationExtension.ext(item.assets["classes"], add_if_missing=True).classes = _classifications(scheme)


def build_stac_item(
    path: Path, *, scene_path: Path, item_id: str, outputs: dict[str, Path], crs: CRS | None,
    transform: Affine, shape: tuple[int, int], scheme: ClassScheme, datetime: dt.datetime | None = None,
    properties: dict | None = None,
) -> pystac.Item:
    """The item :func:`write_stac_item` writes to ``path`` (hrefs relative to ``path``'s folder)."""
    path = Path(path)
    if datetime is not None:
        when, source = (datetime if datetime.tzinfo else datetime.replace(tzinfo=UTC)), "argument"
    else:
        when, source = scene_datetime(scene_path)
    geometry, bbox = wgs84_geometry(crs, transform, shape)
    props = {"eoseg:datetime_source": source, "created": dt.datetime.now(UTC).isoformat().replace("+00:00", "Z"),
             "eoseg:classes": scheme.to_dict()}
    props.update(properties or {})
    item = pystac.Item(id=item_id, geometry=geometry, bbox=bbox, datetime=when, properties=props)
    _add_projection(item, crs, transform, shape)
    _add_assets(item, outputs, path.parent, scheme)
    item.add_link(pystac.Link(rel="derived_from", target=_relative(Path(scene_path), path.parent),
                              media_type=pystac.MediaType.GEOTIFF, title="input scene"))
    return item


def write_stac_item(
    path: Path, *, scene_path: Path, item_id: str, outputs: dict[str, Path], crs: CRS | None,
    transform: Affine, shape: tuple[int, int], scheme: ClassScheme, datetime: dt.datetime | None = None,
    properties: dict | None = None,
) -> Path:
    """Write a STAC Item for one scene's outputs to ``path`` atomically and return ``path``.

    ``outputs`` maps asset keys to files (``OutputPaths.assets()`` gives the usual ones); the asset
    keyed ``classes`` gets ``classification:classes``. Media types and roles follow the suffix.
    """
    path = Path(path)
    item = build_stac_item(path, scene_path=scene_path, item_id=item_id, outputs=outputs, crs=crs,
                           transform=transform, shape=shape, scheme=scheme, datetime=datetime,
                           properties=properties)
    text = json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False), indent=2)
    try:
        with atomic_write(path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write the STAC item ({exc.strerror or exc})", path=path,
                          fix="check free disk space and that the directory is writable") from exc
    return path
