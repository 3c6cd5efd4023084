"""Class polygons: sieve, polygonize, measure, simplify, and write a styled GeoPackage.

One feature per connected region (4-connected, the same rule as the sieve, so every polygon is
valid). Polygons never cover nodata: the sieve runs with the valid-pixel mask (so it neither grows
a class into nodata nor merges a region into nodata), nodata is re-applied after it, and
``rasterio.features.shapes`` polygonizes under the same mask.

Areas and perimeters are ellipsoidal, on the CRS's own ellipsoid (see :mod:`eoseg.outputs.areas`), so they are
in m² / m whatever the CRS: UTM, Web Mercator or longitude/latitude alike (QGIS's ellipsoidal
``$area`` measures the same way; a planar UTM area is off by the scale factor, ~0.1 %, and a Web
Mercator one by up to 1/cos²(latitude)). A scene without a CRS has no ellipsoid: its ``area_m2`` /
``perimeter_m`` then hold planar values in the transform's units (pixels for an identity
transform), and the layer is written without a CRS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyogrio.errors import DataLayerError, DataSourceError
from rasterio.crs import CRS
from rasterio.features import shapes, sieve
from rasterio.windows import Window

from eoseg.classes import ClassScheme
from eoseg.errors import OutputError
from eoseg.outputs.areas import measure, pixel_area
from eoseg.outputs.areas import proj_crs as _proj_crs
from eoseg.outputs.atomic import atomic_write
from eoseg.outputs.qgis import vector_qml

COLUMNS = ["class_id", "class_name", "area_m2", "perimeter_m"]
CONNECTIVITY = 4
STYLES_TABLE = "layer_styles"


def _empty_frame(crs: CRS | None) -> gpd.GeoDataFrame:
    data = {
        "class_id": pd.Series([], dtype="int64"), "class_name": pd.Series([], dtype="object"),
        "area_m2": pd.Series([], dtype="float64"), "perimeter_m": pd.Series([], dtype="float64"),
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=_proj_crs(crs)), crs=_proj_crs(crs))


def _sieve(classes: np.ndarray, valid: np.ndarray, min_pixels: int, nodata: int) -> np.ndarray:
    if min_pixels <= 1 or not valid.any():
        return classes
    sieved = sieve(classes, size=min_pixels, mask=valid, connectivity=CONNECTIVITY)
    sieved[~valid] = nodata
    return sieved


CHUNK_POLYGONS = 50_000


def _regions(classes: np.ndarray, nodata: int, transform: Affine) -> tuple[np.ndarray, np.ndarray]:
    """Polygons and values of all connected regions (see :func:`_region_chunks`)."""
    parts = list(_region_chunks(_array_rows(classes), classes.shape[0], transform, nodata))
    if not parts:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    return np.concatenate([g for g, _ in parts]), np.concatenate([v for _, v in parts])


BAND_ROWS = 1024


RowReader = Callable[[int, int], np.ndarray]  # (first row, end row) → class ids of those rows


def _array_rows(classes: np.ndarray) -> RowReader:
    return lambda r0, r1: classes[r0:r1]


def _file_rows(path: Path) -> RowReader:
    def read(r0: int, r1: int) -> np.ndarray:
        with rasterio.open(path) as ds:
            return ds.read(1, window=Window(0, r0, ds.width, r1 - r0))

    return read


def _region_chunks(read_rows: RowReader, height: int, transform: Affine, nodata: int,
                   chunk: int = CHUNK_POLYGONS, band_rows: int = BAND_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Polygons and values of the connected regions (class != ``nodata``), about ``chunk`` at a time.

    GDAL's polygonizer keeps every polygon of its input in memory before handing out the first, so the
    raster is polygonized ``band_rows`` rows at a time; regions cut by a band edge are held back and merged
    per class at the end (their parts share the cut edge exactly). Rotated grids are done in one band.
    """
    if transform.b or transform.d:
        band_rows = height
    held: list[tuple[np.ndarray, np.ndarray]] = []
    for r0 in range(0, height, band_rows):
        r1 = min(height, r0 + band_rows)
        band_transform = transform @ Affine.translation(0, r0)
        band = np.ascontiguousarray(read_rows(r0, r1), dtype=np.uint8)
        for geoms, values in _shape_chunks(band, band != nodata, band_transform, chunk):
            cut = _on_cut(geoms, transform, [r for r in (r0, r1) if 0 < r < height])
            if (~cut).any():
                yield geoms[~cut], values[~cut]
            if cut.any():
                held.append((geoms[cut], values[cut]))
    if held:
        yield from _merge_held(np.concatenate([g for g, _ in held]), np.concatenate([v for _, v in held]), chunk)


def _on_cut(geoms: np.ndarray, transform: Affine, rows: list[int]) -> np.ndarray:
    """Which polygons reach one of the band-edge ``rows`` (north- or south-up grids)."""
    cut = np.zeros(len(geoms), bool)
    if not rows:
        return cut
    bounds = shapely.bounds(geoms)
    eps = abs(transform.e) * 1e-6
    for row in rows:
        y = transform.f + row * transform.e
        cut |= (np.abs(bounds[:, 1] - y) < eps) | (np.abs(bounds[:, 3] - y) < eps)
    return cut


def _merge_held(geoms: np.ndarray, values: np.ndarray, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Union the cut pieces of each class; pieces that only touch at a corner stay apart (4-connectivity)."""
    for value in np.unique(values):
        parts = shapely.get_parts(shapely.union_all(geoms[values == value]))
        parts = parts[shapely.get_type_id(parts) == 3]  # polygons (no stray lines or points)
        for i in range(0, len(parts), chunk):
            piece = parts[i:i + chunk]
            yield piece, np.full(len(piece), int(value), dtype=np.int64)


def _shape_chunks(classes: np.ndarray, valid: np.ndarray, transform: Affine,
                  chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``rasterio.features.shapes`` of one band, built with shapely's vectorized constructors
    (``shapely.geometry.shape`` per GeoJSON dict costs ~4× the polygonization itself)."""
    coords, ring_of_coord, poly_of_ring, values = [], [], [], []
    for geom, value in shapes(classes, mask=valid, transform=transform, connectivity=CONNECTIVITY):
        for ring in geom["coordinates"]:
            ring_of_coord.append(len(ring))
            poly_of_ring.append(len(values))
            coords.extend(ring)
        values.append(int(value))
        if len(values) == chunk:
            yield _build(coords, ring_of_coord, poly_of_ring, values)
            coords, ring_of_coord, poly_of_ring, values = [], [], [], []
    if values:
        yield _build(coords, ring_of_coord, poly_of_ring, values)


def _build(coords: list, ring_of_coord: list, poly_of_ring: list, values: list) -> tuple[np.ndarray, np.ndarray]:
    ring_index = np.repeat(np.arange(len(ring_of_coord)), ring_of_coord)
    rings = shapely.linearrings(np.asarray(coords, dtype=float), indices=ring_index)
    polygons = shapely.polygons(rings, indices=np.asarray(poly_of_ring))
    return polygons, np.asarray(values, dtype=np.int64)


def _simplify(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplify the polygons as one coverage: shared edges stay shared, edges on nodata stay put.

    Simplifying each polygon alone (``simplify(preserve_topology=True)``) keeps each one valid but
    opens gaps and overlaps between neighbours and can push an edge into nodata; GEOS's coverage
    simplifier (shapely ≥ 2.1) avoids both. Older shapely falls back to per-polygon simplification.
    """
    if tolerance <= 0 or len(geoms) == 0:
        return geoms
    if hasattr(shapely, "coverage_simplify"):
        return shapely.coverage_simplify(geoms, tolerance, simplify_boundary=False)
    return shapely.simplify(geoms, tolerance, preserve_topology=True)


def polygonize(
    classes: np.ndarray, transform: Affine, crs: CRS | None, scheme: ClassScheme, *,
    min_area_m2: float = 0, simplify: float = 0,
) -> gpd.GeoDataFrame:
    """Polygons of a class raster (``uint8`` H×W, ``scheme.nodata`` where there is no data).

    Returns columns ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m``, ``geometry``.
    ``min_area_m2``: regions smaller than this are merged into their largest neighbour (GDAL sieve;
    the pixel threshold comes from the ellipsoidal area of the centre pixel); a small region with no
    valid neighbour (an island in nodata) has nothing to merge into and is dropped.
    ``simplify``: tolerance in CRS units (coverage simplification, see :func:`_simplify`).
    An all-nodata input gives an empty layer with the same columns.
    """
    classes = np.ascontiguousarray(classes, dtype=np.uint8)
    if classes.ndim != 2:
        raise ValueError(f"classes must be a 2-D array (H, W), not shape {classes.shape}")
    nodata = int(scheme.nodata)
    valid = classes != nodata
    if not valid.any():
        return _empty_frame(crs)
    min_pixels = _min_pixels(classes, transform, crs, min_area_m2)
    sieved = _sieve(classes, valid, min_pixels, nodata)
    geoms, values = _regions(sieved, nodata, transform)
    frame = _frame(geoms, values, transform, crs, scheme, min_pixels, simplify)
    return _empty_frame(crs) if frame is None else frame


def _min_pixels(classes: np.ndarray, transform: Affine, crs: CRS | None, min_area_m2: float) -> int:
    if min_area_m2 <= 0:
        return 0
    return math.ceil(min_area_m2 / pixel_area(transform, crs, classes.shape) - 1e-9)


def _frame(geoms: np.ndarray, values: np.ndarray, transform: Affine, crs: CRS | None, scheme: ClassScheme,
           min_pixels: int, simplify: float) -> gpd.GeoDataFrame | None:
    """The attribute table of some regions (None when none is left after the size filter)."""
    if min_pixels > 1:
        pixels = np.rint(shapely.area(geoms) / abs(transform.determinant))
        keep = pixels >= min_pixels
        geoms, values = geoms[keep], values[keep]
    if len(geoms) == 0:
        return None
    geoms = _simplify(geoms, simplify)
    areas, perimeters = measure(geoms, crs)
    frame = {
        "class_id": values, "class_name": [scheme.name_of(int(v)) for v in values],
        "area_m2": areas, "perimeter_m": perimeters,
    }
    return gpd.GeoDataFrame(frame, geometry=list(geoms), crs=_proj_crs(crs))


def write_polygons_streamed(classes: np.ndarray | Path, transform: Affine, crs: CRS | None, path: Path,
                            scheme: ClassScheme, *, min_area_m2: float = 0, simplify: float = 0,
                            layer: str | None = None, chunk: int = CHUNK_POLYGONS) -> Path:
    """:func:`polygonize` straight into a GeoPackage, ``chunk`` regions at a time.

    ``classes`` is an array or the path of a class raster; from a path without ``min_area_m2`` the raster is
    read band by band, so memory follows the band and the chunk, not the scene (a full Landsat-sized scene
    has hundreds of thousands of regions). The sieve needs the whole raster, and coverage simplification every
    polygon at once (that case is built in memory with :func:`polygonize` and :func:`write_polygons`).
    """
    nodata = int(scheme.nodata)
    if isinstance(classes, str | Path) and (min_area_m2 > 0 or simplify > 0):
        classes = _file_rows(Path(classes))(0, _height(Path(classes)))
    if simplify > 0:
        gdf = polygonize(classes, transform, crs, scheme, min_area_m2=min_area_m2, simplify=simplify)
        return write_polygons(gdf, path, scheme, layer)
    min_pixels = 0
    if isinstance(classes, np.ndarray):
        classes = np.ascontiguousarray(classes, dtype=np.uint8)
        valid = classes != nodata
        min_pixels = _min_pixels(classes, transform, crs, min_area_m2)
        classes = _sieve(classes, valid, min_pixels, nodata)
        read_rows, height = _array_rows(classes), classes.shape[0]
    else:
        read_rows, height = _file_rows(Path(classes)), _height(Path(classes))
    path = Path(path)
    layer = layer or default_layer_name(path)
    with _geopackage(path) as tmp:
        written = False
        for geoms, values in _region_chunks(read_rows, height, transform, nodata, chunk):
            frame = _frame(geoms, values, transform, crs, scheme, min_pixels, 0)
            if frame is not None:
                _write_layer(frame, tmp, layer, append=written)
                written = True
        if not written:
            _write_layer(_empty_frame(crs), tmp, layer)
        _write_style(tmp, layer, vector_qml(scheme))
    return path


def _height(path: Path) -> int:
    with rasterio.open(path) as ds:
        return ds.height


def polygonize_file(path: Path, scheme: ClassScheme, **kwargs) -> gpd.GeoDataFrame:
    """:func:`polygonize` band 1 of a class raster on disk (e.g. the finished class COG)."""
    with rasterio.open(path) as ds:
        return polygonize(ds.read(1), ds.transform, ds.crs, scheme, **kwargs)


def default_layer_name(path: Path) -> str:
    """``<stem>_polygons.gpkg`` → ``<stem>``; ``classes`` if nothing is left."""
    return Path(path).stem.removesuffix("_polygons") or "classes"


def _style_row(layer: str, geometry_column: str, qml: str) -> pd.DataFrame:
    """One ``layer_styles`` row, with the columns and values QGIS itself writes for a GeoPackage."""
    return pd.DataFrame({
        "f_table_catalog": [""], "f_table_schema": [""], "f_table_name": [layer],
        "f_geometry_column": [geometry_column], "styleName": [layer], "styleQML": [qml], "styleSLD": [""],
        "useAsDefault": [True], "description": ["eoseg class polygons, coloured by class"], "owner": [""],
        "ui": [None], "update_time": [pd.Timestamp(dt.datetime.now(dt.UTC))],
    })


def _write_layer(gdf: gpd.GeoDataFrame, path: Path, layer: str, append: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
        pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG", geometry_type="Polygon",
                                promote_to_multi=False, append=append)


def _write_style(path: Path, layer: str, qml: str) -> None:
    """Add the style through OGR, as QGIS does: an ``attributes`` table listed in gpkg_contents."""
    geometry_column = pyogrio.read_info(path, layer=layer)["geometry_name"] or "geom"
    pyogrio.write_dataframe(_style_row(layer, geometry_column, qml), path, layer=STYLES_TABLE,
                            driver="GPKG", layer_options={"FID": "id"})


def write_polygons(gdf: gpd.GeoDataFrame, path: Path, scheme: ClassScheme, layer: str | None = None) -> Path:
    """Write ``gdf`` as a GeoPackage layer with a default QGIS style, atomically.

    The style (:func:`eoseg.outputs.qgis.vector_qml`) is stored in the ``layer_styles`` table with
    ``useAsDefault`` set, so QGIS opens the layer coloured and labelled by class.
    """
    path = Path(path)
    layer = layer or default_layer_name(path)
    with _geopackage(path) as tmp:
        _write_layer(gdf, tmp, layer)
        _write_style(tmp, layer, vector_qml(scheme))
    return path


@contextlib.contextmanager
def _geopackage(path: Path) -> Iterator[Path]:
    """A temporary GeoPackage renamed to ``path`` when complete; write failures become one OutputError."""
    try:
        with atomic_write(path) as tmp:
            yield tmp
    except (OSError, sqlite3.Error, DataSourceError, DataLayerError) as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write the polygon GeoPackage ({exc})", path=path,
                          fix="check free disk space and that the directory is writable") from exc


def read_styles(path: Path) -> list[dict]:
    """The rows of a GeoPackage's ``layer_styles`` table (empty if it has none)."""
    with contextlib.closing(sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)) as con:
        con.row_factory = sqlite3.Row
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (STYLES_TABLE,)).fetchone()
        if not exists:
            return []
        return [dict(row) for row in con.execute(f"SELECT * FROM {STYLES_TABLE}")]
