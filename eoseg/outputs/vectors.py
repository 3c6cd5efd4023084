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
from collections.abc import Iterator
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
from rasterio.windows import Window

from eoseg.classes import ClassScheme
from eoseg.errors import EosegError, OutputError
from eoseg.outputs.areas import measure, pixel_area
from eoseg.outputs.areas import proj_crs as _proj_crs
from eoseg.outputs.atomic import atomic_write
from eoseg.outputs.qgis import vector_qml
from eoseg.outputs.regions import CHUNK_POLYGONS, StripRegions, band_rows_for, regions_of, sieve_rows, to_crs

COLUMNS = ["class_id", "class_name", "area_m2", "perimeter_m"]
STYLES_TABLE = "layer_styles"


def _empty_frame(crs: CRS | None) -> gpd.GeoDataFrame:
    data = {
        "class_id": pd.Series([], dtype="int64"), "class_name": pd.Series([], dtype="object"),
        "area_m2": pd.Series([], dtype="float64"), "perimeter_m": pd.Series([], dtype="float64"),
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=_proj_crs(crs)), crs=_proj_crs(crs))


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
    An all-nodata input gives an empty layer with the same columns. The whole array is sieved and
    simplified at once; :class:`PolygonWriter` does the same in bounded memory, band by band.
    """
    classes = np.ascontiguousarray(classes, dtype=np.uint8)
    if classes.ndim != 2:
        raise ValueError(f"classes must be a 2-D array (H, W), not shape {classes.shape}")
    nodata = int(scheme.nodata)
    if not (classes != nodata).any():
        return _empty_frame(crs)
    min_pixels = _min_pixels(classes.shape, transform, crs, min_area_m2)
    geoms, values = regions_of(sieve_rows(classes, min_pixels, nodata), nodata)
    frame = _frame(geoms, values, transform, crs, scheme, min_pixels, simplify)
    return _empty_frame(crs) if frame is None else frame


def _min_pixels(shape: tuple[int, int], transform: Affine, crs: CRS | None, min_area_m2: float) -> int:
    if min_area_m2 <= 0:
        return 0
    return math.ceil(min_area_m2 / pixel_area(transform, crs, shape) - 1e-9)


def _frame(geoms: np.ndarray, values: np.ndarray, transform: Affine, crs: CRS | None, scheme: ClassScheme,
           min_pixels: int, simplify: float) -> gpd.GeoDataFrame | None:
    """The attribute table of some complete regions given in pixel coordinates (None when none is left after
    the size filter: a region below ``min_pixels`` after the sieve is an island in nodata)."""
    if min_pixels > 1:
        keep = np.rint(shapely.area(geoms)) >= min_pixels  # pixel coordinates: the area is the pixel count
        geoms, values = geoms[keep], values[keep]
    if len(geoms) == 0:
        return None
    geoms = _simplify(to_crs(geoms, transform), simplify)
    areas, perimeters = measure(geoms, crs)
    frame = {
        "class_id": values, "class_name": [scheme.name_of(int(v)) for v in values],
        "area_m2": areas, "perimeter_m": perimeters,
    }
    return gpd.GeoDataFrame(frame, geometry=list(geoms), crs=_proj_crs(crs))


class StreamedGeoPackage:
    """A GeoPackage filled while rows stream in: written under a temporary name (``self._tmp``) and renamed to
    ``self.path`` when the ``with`` block ends without error and :meth:`_finish` has written what is left; on
    any error nothing is left and a write failure is one :class:`OutputError`."""

    path: Path
    _stack: contextlib.ExitStack | None = None
    _tmp: Path | None = None

    def _finish(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        with _geopackage_errors(self.path):
            self._tmp = self._stack.enter_context(atomic_write(self.path))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:  # the caller's error (or one write_rows raised): remove the temporary, keep it
            return bool(self._stack.__exit__(exc_type, exc, tb))
        try:
            with _geopackage_errors(self.path):
                self._finish()
                self._stack.close()  # renames the GeoPackage into place
        except BaseException as err:
            self._stack.__exit__(type(err), err, err.__traceback__)  # a no-op once closed
            raise
        return False


class PolygonWriter(StreamedGeoPackage):
    """Class polygons streamed into a GeoPackage layer as the class raster's rows arrive, top to bottom.

    >>> with PolygonWriter(path, (h, w), transform, crs, scheme, min_area_m2=900, simplify=10) as out:
    ...     for rows in blocks:          # any heights, in order
    ...         out.write_rows(rows)

    Memory follows a band of rows (and a sieve halo), not the scene (see :mod:`eoseg.outputs.regions`).
    Completed regions are written ``chunk`` at a time. With ``simplify`` each batch of completed regions
    is simplified as one coverage (:func:`_simplify`): edges shared inside a batch are simplified, edges
    shared with regions of another batch stay as they are (they are boundary edges of the batch), so the
    layer stays a gapless, non-overlapping coverage; the price is a little less simplification along
    the few edges between batches. The GeoPackage is written under a temporary name and renamed into
    place only when complete; on any error nothing is left and the error is one :class:`OutputError`.
    """

    def __init__(self, path: Path, shape: tuple[int, int], transform: Affine, crs: CRS | None,
                 scheme: ClassScheme, *, min_area_m2: float = 0, simplify: float = 0, layer: str | None = None,
                 chunk: int = CHUNK_POLYGONS, band_rows: int | None = None):
        self.path = Path(path)
        self.layer = layer or default_layer_name(self.path)
        self.transform, self.crs, self.scheme, self.simplify, self.chunk = transform, crs, scheme, simplify, chunk
        self.min_pixels = _min_pixels(shape, transform, crs, min_area_m2)
        self.regions = StripRegions(*shape, int(scheme.nodata), min_pixels=self.min_pixels, band_rows=band_rows,
                                    chunk=chunk)
        self.count = 0  # polygons written
        self._waiting: list[tuple[np.ndarray, np.ndarray]] = []  # completed regions not yet written

    def write_rows(self, rows: np.ndarray) -> None:
        """The next rows of the class raster (h, width) uint8."""
        with _geopackage_errors(self.path):
            self._write(self.regions.push(rows))

    def _finish(self) -> None:
        self._write(self.regions.finish())
        self._flush()
        if self.count == 0:
            _write_layer(_empty_frame(self.crs), self._tmp, self.layer)
        _write_style(self._tmp, self.layer, vector_qml(self.scheme))

    def _write(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Collect completed regions; write them once ``chunk`` have gathered (each GeoPackage append costs
        a fixed ~0.1 s, so writing every band's few regions on its own would dominate)."""
        self._waiting.extend(batches)
        if sum(len(g) for g, _ in self._waiting) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self._waiting:
            return
        geoms = np.concatenate([g for g, _ in self._waiting])
        values = np.concatenate([v for _, v in self._waiting])
        self._waiting = []
        for i in range(0, len(geoms), self.chunk):
            frame = _frame(geoms[i:i + self.chunk], values[i:i + self.chunk], self.transform, self.crs,
                           self.scheme, self.min_pixels, self.simplify)
            if frame is not None:
                _write_layer(frame, self._tmp, self.layer, append=self.count > 0)
                self.count += len(frame)


def write_polygons_streamed(classes: np.ndarray | Path, transform: Affine, crs: CRS | None, path: Path,
                            scheme: ClassScheme, *, min_area_m2: float = 0, simplify: float = 0,
                            layer: str | None = None, chunk: int = CHUNK_POLYGONS,
                            band_rows: int | None = None) -> Path:
    """:class:`PolygonWriter` fed from an array or from the path of a class raster (read a band at a time)."""
    shape = classes.shape if isinstance(classes, np.ndarray) else _shape(Path(classes))
    rows = band_rows or band_rows_for(shape[1])
    blocks = _array_blocks(classes, rows) if isinstance(classes, np.ndarray) else _file_blocks(Path(classes), rows)
    with PolygonWriter(path, shape, transform, crs, scheme, min_area_m2=min_area_m2, simplify=simplify,
                       layer=layer, chunk=chunk, band_rows=band_rows) as writer:
        for rows in blocks:
            writer.write_rows(rows)
    return Path(path)


def _array_blocks(classes: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    for r0 in range(0, classes.shape[0], rows):
        yield classes[r0:r0 + rows]


def _file_blocks(path: Path, rows: int) -> Iterator[np.ndarray]:
    with rasterio.open(path) as ds:
        for r0 in range(0, ds.height, rows):
            yield ds.read(1, window=Window(0, r0, ds.width, min(rows, ds.height - r0)))


def _shape(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as ds:
        return ds.height, ds.width


def polygonize_file(path: Path, scheme: ClassScheme, **kwargs) -> gpd.GeoDataFrame:
    """:func:`polygonize` band 1 of a class raster on disk (e.g. the finished class COG)."""
    with rasterio.open(path) as ds:
        return polygonize(ds.read(1), ds.transform, ds.crs, scheme, **kwargs)


def default_layer_name(path: Path) -> str:
    """``<stem>_polygons.gpkg`` → ``<stem>``; ``classes`` if nothing is left."""
    return Path(path).stem.removesuffix("_polygons") or "classes"


POLYGONS_STYLE = "eoseg class polygons, coloured by class"


def _style_row(layer: str, geometry_column: str, qml: str, description: str = POLYGONS_STYLE) -> pd.DataFrame:
    """One ``layer_styles`` row, with the columns and values QGIS itself writes for a GeoPackage."""
    return pd.DataFrame({
        "f_table_catalog": [""], "f_table_schema": [""], "f_table_name": [layer],
        "f_geometry_column": [geometry_column], "styleName": [layer], "styleQML": [qml], "styleSLD": [""],
        "useAsDefault": [True], "description": [description], "owner": [""],
        "ui": [None], "update_time": [pd.Timestamp(dt.datetime.now(dt.UTC))],
    })


def _write_layer(gdf: gpd.GeoDataFrame, path: Path, layer: str, append: bool = False,
                 geometry_type: str = "Polygon") -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'crs' was not provided.*")
        pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG", geometry_type=geometry_type,
                                promote_to_multi=False, append=append)


def _write_style(path: Path, layer: str, qml: str, description: str = POLYGONS_STYLE) -> None:
    """Add the style through OGR, as QGIS does: an ``attributes`` table listed in gpkg_contents."""
    geometry_column = pyogrio.read_info(path, layer=layer)["geometry_name"] or "geom"
    pyogrio.write_dataframe(_style_row(layer, geometry_column, qml, description), path, layer=STYLES_TABLE,
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
def _geopackage_errors(path: Path) -> Iterator[None]:
    """GeoPackage write failures become one OutputError (eoseg's own errors pass unchanged)."""
    try:
        yield
    except (OSError, sqlite3.Error, DataSourceError, DataLayerError) as exc:
        if isinstance(exc, EosegError):
            raise
        raise OutputError(f"cannot write the GeoPackage ({exc})", path=path,
                          fix="check free disk space and that the directory is writable") from exc


@contextlib.contextmanager
def _geopackage(path: Path) -> Iterator[Path]:
    """A temporary GeoPackage renamed to ``path`` when complete; write failures become one OutputError."""
    with _geopackage_errors(path), atomic_write(path) as tmp:
        yield tmp


def read_styles(path: Path) -> list[dict]:
    """The rows of a GeoPackage's ``layer_styles`` table (empty if it has none)."""
    with contextlib.closing(sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)) as con:
        con.row_factory = sqlite3.Row
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (STYLES_TABLE,)).fetchone()
        if not exists:
            return []
        return [dict(row) for row in con.execute(f"SELECT * FROM {STYLES_TABLE}")]
