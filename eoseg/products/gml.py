"""Sentinel-2 L1C cloud masks as GML polygons (products before processing baseline 04.00).

L1C products before processing baseline 04.00 (ESA, 25 January 2022) carry their cloud mask as vectors:
``GRANULE/<granule>/QI_DATA/MSK_CLOUDS_B00.gml`` (the older "OPER" products name it
``S2A_OPER_MSK_CLOUDS_<centre>_<time>_A<orbit>_T<tile>_B00_MSIL1C.gml``). It is an ``eop:Mask`` whose
``eop:maskMembers`` are ``eop:MaskFeature`` elements, each a ``gml:Polygon`` (``eop:extentOf``) in the tile's UTM CRS
with an ``eop:maskType`` of ``OPAQUE`` (opaque clouds) or ``CIRRUS`` (cirrus clouds) (ESA, Sentinel-2 Products
Specification Document, quality indicator masks). A tile without clouds has a file with no ``MaskFeature``, which
GDAL does not even open as a layer: that is no clouds, not an error.

Both types are **clouds** for ``--mask``, as the ``MSK_CLASSI_B00`` raster of later baselines (opaque and cirrus
bands) and SCL's thin-cirrus class are; the GML says nothing about cloud shadow or snow, so ``shadow`` and ``snow``
mask nothing on these products. Other mask types (none are documented for this file) are ignored.

The polygons are read once per file (GDAL's GML driver through pyogrio) and rasterized per read window with
:func:`rasterio.features.rasterize` on the window's transform (pixel centres inside a polygon, as GDAL burns), after
a spatial index picks the polygons that reach the window and they are cut to it (so a cloud spanning the tile is
not walked edge by edge for every window): memory follows the window, never the 10980² tile.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio.features
import rasterio.windows
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from eoseg.errors import ProductError

OPAQUE, CIRRUS = 1, 2
MASK_TYPES = {"OPAQUE": OPAQUE, "CIRRUS": CIRRUS}


@dataclass(frozen=True)
class CloudPolygons:
    """A GML cloud mask's polygons (in the grid's CRS), their mask-type codes and a spatial index over them."""

    geometries: np.ndarray  # shapely geometries
    values: np.ndarray  # OPAQUE / CIRRUS
    tree: shapely.STRtree

    def __len__(self) -> int:
        return len(self.geometries)


def _refused(path: Path, problem: str) -> ProductError:
    return ProductError(f"cannot read the Sentinel-2 GML cloud mask ({problem})", path=path,
                        fix="re-download the product, or pass --mask none to predict without its cloud mask")


def _mask_feature_count(path: Path) -> int:
    """``MaskFeature`` elements in the file; an unreadable or malformed file (a truncated download) is refused
    here, because GDAL reads a truncated GML as zero features without a word."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise _refused(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if root.tag.rsplit("}", 1)[-1] != "Mask":
        raise _refused(path, f"its root element is {root.tag.rsplit('}', 1)[-1]!r}, not an eop:Mask")
    return sum(1 for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "MaskFeature")


@functools.lru_cache(maxsize=8)
def _read(path: str, stamp: tuple[int, int], crs_wkt: str | None) -> CloudPolygons:
    import pyogrio

    file = Path(path)
    empty = CloudPolygons(np.array([], dtype=object), np.array([], np.uint8), shapely.STRtree([]))
    if _mask_feature_count(file) == 0:
        return empty
    try:  # WRITE_GFS=NO: the GML driver would otherwise write a .gfs schema file into the product
        frame = pyogrio.read_dataframe(file, WRITE_GFS="NO")
    except Exception as exc:  # noqa: BLE001 - GDAL's errors come as several exception types
        raise _refused(file, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if "geometry" not in frame or "maskType" not in frame:
        return empty  # features without polygons: nothing is clouded
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if crs_wkt is not None and frame.crs is not None and CRS.from_user_input(frame.crs) != CRS.from_wkt(crs_wkt):
        frame = frame.to_crs(crs_wkt)
    values = frame["maskType"].astype(str).str.strip().str.upper().map(MASK_TYPES)
    keep = values.notna().to_numpy()
    geometries = np.asarray(frame.geometry.array, dtype=object)[keep]
    return CloudPolygons(geometries, values.to_numpy()[keep].astype(np.uint8), shapely.STRtree(geometries))


def read_cloud_gml(path: str | Path, crs: CRS | None = None) -> CloudPolygons:
    """The OPAQUE / CIRRUS polygons of a ``MSK_CLOUDS_B00.gml`` (reprojected to ``crs`` when the file says it is
    on another one); none for an empty mask; :class:`ProductError` for a malformed file. Cached per file version."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise _refused(path, exc.strerror or type(exc).__name__) from None
    return _read(str(path.resolve()), (stat.st_mtime_ns, stat.st_size), crs.to_wkt() if crs else None)


class GmlCloudLayer:
    """The polygons as a one-band quality layer on a grid (0 clear, 1 opaque, 2 cirrus), read like a rasterio
    dataset: ``read(window=...)`` gives ``(1, h, w)`` uint8."""

    count = 1

    def __init__(self, polygons: CloudPolygons, transform: Affine, width: int, height: int):
        self.polygons, self.transform, self.width, self.height = polygons, transform, width, height

    def read(self, window: Window) -> np.ndarray:
        window = Window(*(int(v) for v in (window.col_off, window.row_off, window.width, window.height)))
        out = np.zeros((1, window.height, window.width), np.uint8)
        if not len(self.polygons) or not window.width or not window.height:
            return out
        transform = rasterio.windows.transform(window, self.transform)
        # polygons are cut to the window grown by a pixel: the cut edges lie beyond the window's pixel centres
        left, bottom, right, top = rasterio.windows.bounds(
            Window(window.col_off - 1, window.row_off - 1, window.width + 2, window.height + 2), self.transform)
        (xmin, xmax), (ymin, ymax) = sorted((left, right)), sorted((bottom, top))
        hits = self.polygons.tree.query(shapely.box(xmin, ymin, xmax, ymax))
        if len(hits):
            hits.sort()  # file order: where polygons overlap, the later one's type wins, as on the whole grid
            clipped = shapely.clip_by_rect(self.polygons.geometries[hits], xmin, ymin, xmax, ymax)
            keep = ~shapely.is_empty(clipped)
            shapes = zip(clipped[keep], self.polygons.values[hits][keep].tolist(), strict=True)
            rasterio.features.rasterize(shapes, out=out[0], transform=transform)
        return out
