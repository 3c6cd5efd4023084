"""Shorelines: the sub-pixel water/land boundary, traced strip by strip, written as a styled GeoPackage.

The shoreline is a contour of a per-pixel field in which higher means water:

- ``prob`` (default): P(water) + P(white water) from the blended probabilities, contoured at 0.5;
- ``index``: a water index (MNDWI, or NDWI with NIR when the scene has no SWIR) contoured at a threshold
  chosen per scene between the sand and water values near their boundary (see :mod:`eoseg.shoreline`).

Tracing is marching squares (contourpy) on pixel centres, so the line is sub-pixel: a crossing between two
pixel centres is placed by linear interpolation of the field. :class:`ShorelineTracer` is fed finished rows
top to bottom, traces what it has strip by strip and keeps the last row of each strip as the first row of
the next, so a line cut at a strip boundary has its two pieces end on the same crossing of the shared row;
the pieces are joined there. The result does not depend on how the rows were cut into strips (tested).

What is kept:

- pixels of nodata (class 255: outside the scene's footprint, cloud masks) are masked: every marching-squares
  cell with a nodata corner is left out, so no line runs along nodata or leaves the data;
- only vertices within ``sand_radius`` pixels (along both axes: a square buffer) of a sand pixel are kept (a
  shoreline is a sandy-beach edge, not a river bank in a field); a line is cut where it leaves the sand buffer;
- lines shorter than ``min_length_m`` are dropped.

Orientation: every written line runs with water on its right and land on its left (in map coordinates),
which :mod:`eoseg.transects` uses to put a transect's origin on the land side.
Memory follows a strip of rows plus a halo of ``sand_radius`` rows, not the scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import contourpy
import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from affine import Affine
from rasterio.crs import CRS

from eoseg.classes import ClassScheme
from eoseg.errors import ConfigError
from eoseg.outputs.areas import measure, pixel_area
from eoseg.outputs.areas import proj_crs as _proj_crs
from eoseg.outputs.qgis import line_qml
from eoseg.outputs.vectors import STYLES_TABLE, StreamedGeoPackage, _geopackage_errors, _write_layer, _write_style

METHODS = ("prob", "index")
WATER_CLASSES = ("water", "whitewater")
SAND_CLASS = "sand"
SAND_BUFFER_M = 30.0  # vertices farther than this (and at least 2 pixels) from sand are dropped
COLUMNS = ["scene", "date", "sensor", "method", "level", "length_m"]
CHUNK_LINES = 2000
TRACE_ROWS = 64  # rows traced at a time: contourpy's float64 copy and the gradients stay this tall


def water_ids(scheme: ClassScheme) -> list[int]:
    ids = [c.id for c in scheme.classes if c.name in WATER_CLASSES]
    if not ids:
        raise ConfigError("the model's classes have no water class", path="--shoreline",
                          fix=f"use a model whose classes include {' or '.join(WATER_CLASSES)}")
    return ids


def sand_id(scheme: ClassScheme) -> int:
    for c in scheme.classes:
        if c.name == SAND_CLASS:
            return c.id
    raise ConfigError("the model's classes have no sand class", path="--shoreline",
                      fix="use a model whose classes include sand (the packaged models do)")


def water_probability(probs: np.ndarray, scheme: ClassScheme) -> np.ndarray:
    """P(water) + P(white water), (n, W) float32, from the class probabilities (K, n, W)."""
    first, *rest = water_ids(scheme)
    out = probs[first].astype(np.float32, copy=True)  # no (2, n, W) temporary of a fancy index
    for i in rest:
        out += probs[i]
    return out


def sand_radius_px(transform: Affine, crs: CRS | None, shape: tuple[int, int],
                   buffer_m: float = SAND_BUFFER_M) -> int:
    """The sand buffer in pixels: ``buffer_m`` at the scene's pixel size, at least 2 pixels."""
    size = math.sqrt(pixel_area(transform, crs, shape)) if crs is not None else 1.0
    return max(2, math.ceil(buffer_m / size - 1e-9)) if crs is not None else 2


# ---------------------------------------------------------------------------------------------- tracing


@dataclass
class Piece:
    """A traced line in pixel-centre coordinates (x = column, y = row), its near-sand flag per vertex, and a
    score whose sign says on which side water lies (sum over segments of cross(direction, field gradient))."""

    coords: np.ndarray  # (N, 2) float64
    near: np.ndarray  # (N,) bool
    score: float

    def reversed(self) -> Piece:
        return Piece(self.coords[::-1], self.near[::-1], -self.score)


def _concat(parts: list[Piece], closed: bool) -> Piece:
    coords: list[np.ndarray] = [parts[0].coords] + [p.coords[1:] for p in parts[1:]]
    near = [parts[0].near] + [p.near[1:] for p in parts[1:]]
    coords = np.concatenate(coords)
    if closed:  # a ring: its last piece ends on the first one's start (up to rounding); end exactly there
        coords[-1] = coords[0]
    return Piece(coords, np.concatenate(near), float(sum(p.score for p in parts)))


def _key(x: float) -> float:
    return round(float(x), 6)


def join_at_row(pieces: list[Piece], row: int) -> list[Piece]:
    """Join pieces whose ends meet on ``row`` (one from above the row, one from below, at the same crossing)."""
    ends: dict[float, list[tuple[int, int]]] = {}
    for i, p in enumerate(pieces):
        for e, (x, y) in ((0, p.coords[0]), (1, p.coords[-1])):
            if y == row:
                ends.setdefault(_key(x), []).append((i, e))
    partner: dict[tuple[int, int], tuple[int, int]] = {}
    for found in ends.values():
        if len(found) == 2 and found[0][0] != found[1][0]:
            partner[found[0]], partner[found[1]] = found[1], found[0]
    used = [False] * len(pieces)

    def chain(i: int, e: int) -> Piece:
        parts, closed = [], False
        while True:
            used[i] = True
            parts.append(pieces[i] if e == 0 else pieces[i].reversed())
            nxt = partner.get((i, 1 - e))
            if nxt is None:
                break
            if used[nxt[0]]:
                closed = True
                break
            i, e = nxt[0], nxt[1]
        return _concat(parts, closed)

    out = []
    for i in range(len(pieces)):  # open chains, from a free end
        if not used[i]:
            free = [e for e in (0, 1) if (i, e) not in partner]
            if free:
                out.append(chain(i, free[0]))
    out.extend(chain(i, 0) for i in range(len(pieces)) if not used[i])  # what is left are rings
    return out


def _orientation_scores(lines: list[np.ndarray], field: np.ndarray) -> list[float]:
    """Per line: sum over segments of cross(segment, gradient of the field at its midpoint's nearest pixel;
    central differences, computed at those pixels only)."""
    h, w = field.shape
    scores = []
    for xy in lines:
        d = np.diff(xy, axis=0)
        mid = (xy[:-1] + xy[1:]) / 2
        c = np.clip(np.rint(mid[:, 0]).astype(int), 0, w - 1)
        r = np.clip(np.rint(mid[:, 1]).astype(int), 0, h - 1)
        gx = field[r, np.minimum(c + 1, w - 1)] - field[r, np.maximum(c - 1, 0)]
        gy = field[np.minimum(r + 1, h - 1), c] - field[np.maximum(r - 1, 0), c]
        cross = d[:, 0] * gy - d[:, 1] * gx
        scores.append(float(np.nansum(cross)))
    return scores


class ShorelineTracer:
    """Contours of a field fed in rows top to bottom; returns completed lines in pixel-centre coordinates.

    >>> tracer = ShorelineTracer((h, w), level=0.5, nodata=255, sand=2, sand_radius=3)
    >>> for classes, field in blocks:       # (n, w) uint8 and (n, w) float, any n, in order
    ...     lines = tracer.push(classes, field)
    >>> lines += tracer.finish()
    """

    def __init__(self, shape: tuple[int, int], *, level: float, nodata: int, sand: int | None, sand_radius: int,
                 trace_rows: int = TRACE_ROWS):
        self.height, self.width = int(shape[0]), int(shape[1])
        self.trace_rows = max(2, int(trace_rows))
        self.level, self.nodata, self.sand, self.radius = float(level), int(nodata), sand, int(sand_radius)
        self._blocks: list[tuple[int, np.ndarray, np.ndarray]] = []  # (first scene row, classes, field) as received
        self._received = 0
        self._done = 0  # field rows [0, done) have been traced (row done - 1 is shared with the next strip)
        self._open: list[Piece] = []  # pieces with an end on row done - 1

    def push(self, classes: np.ndarray, field: np.ndarray) -> list[Piece]:
        """The next rows; returns the lines they complete. The arrays are kept (not copied) until traced:
        callers must not write into them afterwards."""
        classes = np.asarray(classes, np.uint8)
        field = np.asarray(field, np.float32)
        if classes.shape != field.shape or classes.ndim != 2 or classes.shape[1] != self.width:
            raise ValueError(f"classes {classes.shape} and field {field.shape} must both be (n, {self.width})")
        if self._received + classes.shape[0] > self.height:
            raise ValueError(f"{classes.shape[0]} more rows do not fit a scene {self.height} rows tall")
        self._blocks.append((self._received, classes, field))
        self._received += classes.shape[0]
        final = self._received == self.height
        limit = self.height if final else self._received - self.radius
        done: list[Piece] = []
        while limit - max(self._done - 1, 0) >= 2 or (final and self._done < self.height):
            stop = min(limit, max(self._done - 1, 0) + self.trace_rows)
            done += self._trace(stop, final and stop == limit)
            if stop == limit:
                break
        return done

    def finish(self) -> list[Piece]:
        if self._received != self.height:
            raise ValueError(f"got {self._received} of {self.height} rows")
        done, self._open = self._open, []
        return done

    def _trace(self, limit: int, final: bool) -> list[Piece]:
        top = max(self._done - 1, 0)
        lo = max(top - self.radius, 0)  # classes rows needed for the sand buffer of rows [top, limit)
        hi = min(limit + self.radius, self.height)
        classes = self._rows(lo, hi, 1)
        field = self._rows(top, limit, 2)
        near = self._near_sand(classes)[top - lo:limit - lo]
        pieces = self._contours(field, classes[top - lo:limit - lo] == self.nodata, near, top)
        joined = join_at_row(self._open + pieces, top) if top > 0 else pieces
        bottom = limit - 1
        self._open = [] if final else [p for p in joined if p.coords[0, 1] == bottom or p.coords[-1, 1] == bottom]
        complete = joined if final else [p for p in joined if not (p.coords[0, 1] == bottom
                                                                    or p.coords[-1, 1] == bottom)]
        self._done = limit
        keep = max(limit - 1 - self.radius, 0)  # rows still needed: the shared row and its sand halo
        self._blocks = [b for b in self._blocks if b[0] + b[1].shape[0] > keep]
        if self._blocks and self._blocks[0][0] < keep:  # keep a copy of the rows still needed, free the block
            start, c, f = self._blocks[0]
            self._blocks[0] = (keep, c[keep - start:].copy(), f[keep - start:].copy())
        return complete

    def _rows(self, a: int, b: int, which: int) -> np.ndarray:
        """Scene rows [a, b) of the received classes (``which`` 1) or field (2): a view when in one block."""
        parts = [blk[which][max(a - blk[0], 0):b - blk[0]] for blk in self._blocks
                 if blk[0] < b and blk[0] + blk[1].shape[0] > a]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _near_sand(self, classes: np.ndarray) -> np.ndarray:
        if self.sand is None:
            return np.ones(classes.shape, bool)
        return near(classes == self.sand, self.radius)

    def _contours(self, field: np.ndarray, nodata: np.ndarray, near: np.ndarray, top: int) -> list[Piece]:
        if field.shape[0] < 2 or field.shape[1] < 2:
            return []
        mask = nodata | ~np.isfinite(field)
        z = np.ma.array(np.where(mask, self.level, field).astype(np.float64), mask=mask)
        gen = contourpy.contour_generator(z=z, name="serial", line_type="Separate", corner_mask=False)
        lines = [_snap(xy) for xy in gen.lines(self.level) if len(xy) >= 2]
        scores = _orientation_scores(lines, np.where(mask, np.nan, field))
        pieces = []
        h, w = field.shape
        for xy, score in zip(lines, scores, strict=True):
            r0 = np.clip(np.floor(xy[:, 1]).astype(int), 0, h - 1)
            r1 = np.clip(np.ceil(xy[:, 1]).astype(int), 0, h - 1)
            c0 = np.clip(np.floor(xy[:, 0]).astype(int), 0, w - 1)
            c1 = np.clip(np.ceil(xy[:, 0]).astype(int), 0, w - 1)
            flag = near[r0, c0] | near[r1, c1]
            coords = np.column_stack([xy[:, 0], xy[:, 1] + top])
            pieces.append(Piece(coords, flag, score))
        return pieces


def _snap(xy: np.ndarray) -> np.ndarray:
    """Coordinates within 1e-9 px of a pixel centre's row or column set exactly onto it: contourpy's
    interpolation (``a·(1 − t) + b·t``) can land a crossing of a row a rounding error off it, and the strip join
    matches ends on the shared row exactly."""
    nearest = np.rint(xy)
    return np.where(np.abs(xy - nearest) < 1e-9, nearest, xy)


def near(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` pixels of a True pixel of ``mask`` along both axes (a square buffer): two 1-D
    running maxima, whose cost does not grow with the radius (a disc-shaped dilation's does, with its area)."""
    from scipy import ndimage  # only with --shoreline: keeps scipy out of every predict's start-up

    size = 2 * int(radius) + 1
    out = ndimage.maximum_filter1d(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8), size,
                                   axis=0, mode="constant")
    return ndimage.maximum_filter1d(out, size, axis=1, mode="constant").astype(bool)


def sand_runs(piece: Piece) -> list[np.ndarray]:
    """The parts of a line whose vertices are all near sand (runs of at least two vertices)."""
    near = piece.near
    if near.all():
        return [piece.coords]
    edges = np.flatnonzero(np.diff(np.r_[0, near.astype(np.int8), 0]))
    return [piece.coords[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= 2]


def pixel_lines_to_crs(lines: list[np.ndarray], transform: Affine) -> np.ndarray:
    """Pixel-centre coordinates (column, row) → LineStrings in the transform's CRS."""
    a, b, c, d, e, f = tuple(transform)[:6]
    out = []
    for xy in lines:
        x, y = xy[:, 0] + 0.5, xy[:, 1] + 0.5
        out.append(shapely.linestrings(np.column_stack([a * x + b * y + c, d * x + e * y + f])))
    return np.array(out, dtype=object)


def oriented(piece: Piece, transform: Affine) -> Piece:
    """The piece running with water on its right in map coordinates (see the module notes)."""
    det = transform.a * transform.e - transform.b * transform.d
    # cross(direction, towards water) < 0 means water on the right in a right-handed frame; the pixel frame
    # (rows down) maps to the map frame with the sign of the transform's determinant.
    return piece.reversed() if piece.score * np.sign(det) > 0 else piece


# ---------------------------------------------------------------------------------------------- writing


def empty_frame(crs: CRS | None) -> gpd.GeoDataFrame:
    data = {"scene": pd.Series([], dtype="object"), "date": pd.Series([], dtype="object"),
            "sensor": pd.Series([], dtype="object"), "method": pd.Series([], dtype="object"),
            "level": pd.Series([], dtype="float64"), "length_m": pd.Series([], dtype="float64")}
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=_proj_crs(crs)), crs=_proj_crs(crs))


@dataclass(frozen=True)
class ShorelineInfo:
    """The attributes every line of one scene's shoreline carries."""

    scene: str
    date: str | None = None  # ISO 8601 time of the acquisition
    sensor: str | None = None
    method: str = "prob"


class ShorelineWriter(StreamedGeoPackage):
    """Shoreline lines streamed into ``<stem>_shoreline.gpkg`` as finished rows arrive, top to bottom.

    >>> with ShorelineWriter(path, (h, w), transform, crs, scheme, info, level=0.5) as out:
    ...     for classes, field in blocks:   # field: P(water) + P(white water), or a water index
    ...         out.write_rows(classes, field)

    The GeoPackage is written under a temporary name and renamed into place when complete (nothing is left
    on error), with a QGIS line style as the layer's default.
    """

    def __init__(self, path: Path, shape: tuple[int, int], transform: Affine, crs: CRS | None,
                 scheme: ClassScheme, info: ShorelineInfo, *, level: float = 0.5, min_length_m: float = 0.0,
                 sand_buffer_m: float = SAND_BUFFER_M, layer: str | None = None):
        self.path = Path(path)
        self.layer = layer or (self.path.stem.removesuffix("_shoreline") or "shoreline")
        self.transform, self.crs, self.info, self.level = transform, crs, info, float(level)
        self.min_length_m = float(min_length_m)
        radius = sand_radius_px(transform, crs, shape, sand_buffer_m)
        self.tracer = ShorelineTracer(shape, level=level, nodata=scheme.nodata, sand=sand_id(scheme),
                                      sand_radius=radius)
        self.count = 0
        self.length_m = 0.0
        self._waiting: list[np.ndarray] = []

    def write_rows(self, classes: np.ndarray, field: np.ndarray) -> None:
        self._add(self.tracer.push(classes, field))

    def _add(self, pieces: list[Piece]) -> None:
        for piece in pieces:
            self._waiting.extend(sand_runs(oriented(piece, self.transform)))
        if len(self._waiting) >= CHUNK_LINES:
            self._flush()

    def _flush(self) -> None:
        if not self._waiting:
            return
        geoms = pixel_lines_to_crs(self._waiting, self.transform)
        self._waiting = []
        _, lengths = measure(geoms, self.crs)
        keep = lengths >= self.min_length_m
        if not keep.any():
            return
        n = int(keep.sum())
        frame = gpd.GeoDataFrame(
            {"scene": [self.info.scene] * n, "date": [self.info.date] * n, "sensor": [self.info.sensor] * n,
             "method": [self.info.method] * n, "level": np.full(n, round(self.level, 6)),
             "length_m": np.round(lengths[keep], 3)},
            geometry=list(geoms[keep]), crs=_proj_crs(self.crs))
        with _geopackage_errors(self.path):
            _write_layer(frame, self._tmp, self.layer, append=self.count > 0, geometry_type="LineString")
        self.count += n
        self.length_m += float(lengths[keep].sum())

    def _finish(self) -> None:
        self._add(self.tracer.finish())
        self._flush()
        if self.count == 0:
            _write_layer(empty_frame(self.crs), self._tmp, self.layer, geometry_type="LineString")
        _write_style(self._tmp, self.layer, line_qml(), description="eoseg shoreline: water on the right of each line")


def trace_shoreline(classes: np.ndarray, field: np.ndarray, transform: Affine, crs: CRS | None,
                    scheme: ClassScheme, *, level: float = 0.5, min_length_m: float = 0.0,
                    sand_buffer_m: float = SAND_BUFFER_M, strip_rows: int | None = None,
                    trace_rows: int = TRACE_ROWS) -> gpd.GeoDataFrame:
    """The shoreline of whole arrays as a GeoDataFrame (no file), fed ``strip_rows`` rows at a time (or at once)
    and traced ``trace_rows`` at a time.

    Same rules as :class:`ShorelineWriter`; for tests and notebooks.
    """
    shape = classes.shape
    tracer = ShorelineTracer(shape, level=level, nodata=scheme.nodata, sand=sand_id(scheme),
                             sand_radius=sand_radius_px(transform, crs, shape, sand_buffer_m), trace_rows=trace_rows)
    pieces = []
    step = strip_rows or shape[0]
    for r0 in range(0, shape[0], step):
        pieces += tracer.push(classes[r0:r0 + step], field[r0:r0 + step])
    pieces += tracer.finish()
    runs = [run for p in pieces for run in sand_runs(oriented(p, transform))]
    geoms = pixel_lines_to_crs(runs, transform)
    if len(geoms) == 0:
        return empty_frame(crs)
    _, lengths = measure(geoms, crs)
    keep = lengths >= min_length_m
    return gpd.GeoDataFrame({"length_m": lengths[keep]}, geometry=list(geoms[keep]), crs=_proj_crs(crs))


def data_layer(path: Path) -> str:
    """The first layer of a GeoPackage / vector file that is not the ``layer_styles`` table."""
    layers = [name for name, _ in pyogrio.list_layers(path) if name != STYLES_TABLE]
    if not layers:
        raise ConfigError("holds no vector layer", path=path, fix="give a GeoPackage or GeoJSON of lines")
    return str(layers[0])


def read_lines(path: Path) -> gpd.GeoDataFrame:
    """A shoreline (or transects) file's features, whatever its format, without the style table."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("does not exist", path=path, fix="check the path")
    options = {"DATE_AS_STRING": "YES"} if path.suffix.lower() in (".geojson", ".json") else {}  # "T0001" is an id
    return pyogrio.read_dataframe(path, layer=data_layer(path), **options)
