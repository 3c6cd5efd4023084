"""Shore-normal transects and chainages: where each scene's shoreline crosses each transect.

A transect is a straight line with an ``id``; its first point is its origin, on the land side. The chainage of
a shoreline on a transect is the distance along the transect from its origin to where the shoreline crosses
it (as in CoastSat, Vos et al. 2019): larger chainage = shoreline farther seaward. Where a shoreline crosses a
transect more than once, the median of the crossings is used; where it does not cross, or any part of the
transect lies on nodata (clouds, the scene's collar, outside the scene) in the scene's class raster, the
chainage is empty (the visible crossing may not be the shoreline when part of the transect cannot be seen).

:func:`make_transects` builds transects from a reference shoreline: every ``spacing`` metres along it, a line
``length`` metres long, normal to the shoreline (its direction taken between the points ``smooth`` metres
before and after, by default the larger of ``spacing`` and half the ``length``, so pixel-scale wiggles of a
traced shoreline do not tilt the transects), centred on it,
origin on the land side. eoseg's shorelines run with water on their right, so land is on the left; for a
hand-drawn reference that runs the other way, pass ``flip``.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from pyproj import CRS as ProjCRS

from eoseg.errors import ConfigError
from eoseg.outputs.atomic import atomic_write
from eoseg.outputs.shoreline import read_lines

ID_COLUMNS = ("id", "transect_id", "name", "transect")


def metric_crs(frame: gpd.GeoDataFrame) -> ProjCRS:
    """The frame's CRS when it is projected in metres, else the UTM zone over it."""
    crs = frame.crs
    if crs is None:
        raise ConfigError("has no CRS", path="transects/shoreline", fix="assign the file a CRS (e.g. in QGIS)")
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
        return crs
    return frame.estimate_utm_crs()


def _merged_lines(geoms) -> list[shapely.LineString]:
    merged = shapely.line_merge(shapely.union_all(list(geoms)), directed=True)
    parts = shapely.get_parts(merged)
    return [p for p in parts if isinstance(p, shapely.LineString) and not p.is_empty]


def make_transects(shoreline: gpd.GeoDataFrame, spacing: float = 50.0, length: float = 300.0, *,
                   flip: bool = False, smooth: float | None = None, prefix: str = "T") -> gpd.GeoDataFrame:
    """Shore-normal transects every ``spacing`` m along ``shoreline`` (lines), ``length`` m long, centred on it,
    origin on the land side (the left of the lines; ``flip`` for lines with water on the left). Columns ``id``
    (``T0001``...), ``geometry``; in the shoreline's CRS."""
    if spacing <= 0 or length <= 0:
        raise ConfigError("--spacing and --length must be positive", path="--spacing",
                          fix="use e.g. --spacing 50 --length 300")
    if len(shoreline) == 0:
        raise ConfigError("the reference shoreline has no lines", path="--shoreline",
                          fix="give a shoreline GeoPackage with at least one line")
    work = metric_crs(shoreline)
    lines = _merged_lines(shoreline.to_crs(work).geometry)
    out = []
    for line in sorted(lines, key=lambda g: -g.length):
        if line.length < spacing:
            continue
        start = (line.length % spacing) / 2
        at = np.arange(start, line.length + 1e-9, spacing)
        half = smooth if smooth is not None else max(spacing, length / 2)
        p = shapely.get_coordinates(shapely.line_interpolate_point(line, at))
        a = shapely.get_coordinates(shapely.line_interpolate_point(line, np.clip(at - half, 0, line.length)))
        b = shapely.get_coordinates(shapely.line_interpolate_point(line, np.clip(at + half, 0, line.length)))
        t = b - a
        t /= np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-12)[:, None]
        left = np.column_stack([-t[:, 1], t[:, 0]]) * (-1 if flip else 1)
        origin, end = p + left * length / 2, p - left * length / 2
        out.extend(shapely.linestrings(np.stack([origin, end], axis=1)))
    if not out:
        raise ConfigError(f"the reference shoreline has no line as long as the spacing ({spacing:g} m)",
                          path="--shoreline", fix="use a smaller --spacing")
    ids = [f"{prefix}{i + 1:04d}" for i in range(len(out))]
    return gpd.GeoDataFrame({"id": ids}, geometry=out, crs=work).to_crs(shoreline.crs)


def write_transects(frame: gpd.GeoDataFrame, path: Path) -> Path:
    """Write transects (GeoPackage or GeoJSON by suffix) atomically."""
    path = Path(path)
    driver = "GeoJSON" if path.suffix.lower() in (".geojson", ".json") else "GPKG"
    with atomic_write(path) as tmp:
        pyogrio.write_dataframe(frame, tmp, layer=path.stem if driver == "GPKG" else None, driver=driver)
    return path


def read_transects(path: Path) -> gpd.GeoDataFrame:
    """Transects from a GeoPackage / GeoJSON in any CRS: ``id`` (from an id-like column, else the row number)
    as a string, and straight lines (first point = origin)."""
    frame = read_lines(path)
    column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    ids = frame[column].astype(str) if column else pd.Series([f"T{i + 1:04d}" for i in range(len(frame))])
    if ids.duplicated().any():
        raise ConfigError(f"transect ids repeat ({ids[ids.duplicated()].iloc[0]!r})", path=path,
                          fix="give each transect a unique id")
    if frame.crs is None:
        raise ConfigError("the transects have no CRS", path=path, fix="assign the file a CRS (e.g. in QGIS)")
    bad = ~frame.geom_type.isin(["LineString"])
    if bad.any():
        raise ConfigError(f"transect {ids[bad].iloc[0]!r} is not a line", path=path,
                          fix="transects are straight lines from the land side to the sea")
    return gpd.GeoDataFrame({"id": ids.values}, geometry=frame.geometry.values, crs=frame.crs)


def crossing_distances(transect: shapely.LineString, shoreline: shapely.Geometry) -> np.ndarray:
    """Distances along ``transect`` from its origin to each crossing with ``shoreline`` (sorted)."""
    hit = shapely.intersection(transect, shoreline)
    if hit.is_empty:
        return np.empty(0)
    points = shapely.points(shapely.get_coordinates(hit))
    return np.unique(np.round(shapely.line_locate_point(transect, points), 9))


def nodata_fraction(transect: shapely.LineString, classes_path: Path, nodata: int = 255) -> float:
    """The fraction of the transect (sampled every half pixel) on nodata or outside the class raster.
    ``transect`` is in the raster's CRS."""
    with rasterio.open(classes_path) as ds:
        step = min(abs(ds.transform.a), abs(ds.transform.e)) / 2
        n = max(2, int(np.ceil(transect.length / step)) + 1)
        xy = shapely.get_coordinates(shapely.line_interpolate_point(transect, np.linspace(0, transect.length, n)))
        rows, cols = rasterio.transform.rowcol(ds.transform, xy[:, 0], xy[:, 1])
        rows, cols = np.asarray(rows), np.asarray(cols)
        inside = (rows >= 0) & (rows < ds.height) & (cols >= 0) & (cols < ds.width)
        if not inside.any():
            return 1.0
        r0, r1, c0, c1 = rows[inside].min(), rows[inside].max(), cols[inside].min(), cols[inside].max()
        window = rasterio.windows.Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1)
        block = ds.read(1, window=window)
        values = block[rows[inside] - r0, cols[inside] - c0]
    return float(1 - np.mean(inside) + np.mean(inside) * np.mean(values == nodata))


def chainages(transects: gpd.GeoDataFrame, shoreline: gpd.GeoDataFrame, classes_path: Path | None = None,
              nodata: int = 255) -> pd.DataFrame:
    """Per transect: ``chainage`` (m, median of the crossings; NaN when none or on nodata), ``crossings``,
    ``spread`` (m between the first and last crossing: large when the shoreline crosses the transect again at a
    lagoon or back-beach edge, a reason to distrust the median) and ``cloud_fraction`` (the transect's fraction
    on nodata in ``classes_path``; NaN without it)."""
    rows = []
    if shoreline.crs is None:
        raise ConfigError("the shoreline has no CRS", path="shoreline", fix="predict on georeferenced scenes")
    work = metric_crs(transects)
    lines_w = shapely.union_all(list(shoreline.to_crs(work).geometry)) if len(shoreline) else shapely.LineString()
    t_work = transects.to_crs(work)
    t_scene = transects.to_crs(shoreline.crs)
    for tid, tw, ts in zip(transects["id"], t_work.geometry, t_scene.geometry, strict=True):
        d = crossing_distances(tw, lines_w)
        cloud = nodata_fraction(ts, classes_path, nodata) if classes_path is not None else float("nan")
        value = float(np.median(d)) if len(d) and not cloud > 0 else float("nan")
        rows.append({"transect": tid, "chainage": value, "crossings": len(d),
                     "spread": float(np.ptp(d)) if len(d) else float("nan"), "cloud_fraction": cloud})
    return pd.DataFrame(rows)
