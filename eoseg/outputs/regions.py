"""Connected class regions of a raster that arrives top to bottom, in bounded memory.

:class:`StripRegions` takes a class raster's rows in order, in blocks of any height (the finished rows of
the predict loop, or strips read from a file), and hands back the regions (4-connected, as polygons) as
soon as they are complete. Memory follows one band of rows and the regions cut by its lower edge, not the
scene:

- Rows are polygonized a band at a time (GDAL's polygonizer keeps every polygon of its input in memory
  before handing out the first, and its sieve and polygonizer hold an int32 id per pixel). A band holds
  about ``BAND_PIXELS`` pixels (:func:`band_rows_for`), so a wider scene gets shorter bands, not bigger
  ones. Polygons are built in *pixel coordinates* (column, row), so the parts of a region cut at a band
  edge share that edge exactly, whatever the geotransform (rotated grids
  and geographic CRSs alike); callers map them to the CRS with :func:`to_crs`.
- A region touching a band's lower edge is held; once the next band is polygonized, only the held pieces
  and the new pieces touching that edge are looked at: pieces of one class that share the edge are united,
  and whatever no longer touches an open edge is handed out. The merged regions are the regions of a
  whole-raster ``rasterio.features.shapes`` (same pixels, same areas; the tests check it).
- With ``min_pixels`` > 1 each band is sieved (``rasterio.features.sieve``, the valid pixels as mask) on a
  window reaching ``halo = min_pixels`` rows beyond it on both sides, and only the band's own rows are kept.
  A region smaller than ``min_pixels`` spans fewer than ``min_pixels`` rows, and a region that leaves the
  window shows at least ``halo`` pixels inside it even when it starts one row outside the band, so every
  region crossing the band, and every neighbour of one, is judged small or large exactly as on the whole
  raster (the tests check that no pixel of a large region changes and that no small region survives).
  What can differ from a whole-raster sieve is *which* neighbour a small region joins when its two
  largest neighbours both reach beyond the window (GDAL picks the largest, and the window sees only part
  of each), or when small regions chain into each other across more than the halo: the class given to a
  few small regions near band edges, never whether they are removed. (Sieving each band alone would be
  wrong in kind: a large region cut by a band edge would look small and be sieved away.) The halo is
  capped at ``MAX_HALO`` rows to keep memory bounded; above that many pixels, a region taller than the
  halo but of fewer than ``min_pixels`` pixels could be judged large (a thin line over 1000 rows tall).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes, sieve

CONNECTIVITY = 4
BAND_PIXELS = 1 << 23  # ~8 Mpx per band: 8 MiB of classes, ~32 MiB of GDAL's int32 ids (fewer halo rows sieved twice)
MIN_BAND_ROWS = 64


def band_rows_for(width: int) -> int:
    """Rows per band for a raster ``width`` pixels wide (about ``BAND_PIXELS`` pixels, at least ``MIN_BAND_ROWS``)."""
    return max(MIN_BAND_ROWS, BAND_PIXELS // max(1, int(width)))

MAX_HALO = 1024
CHUNK_POLYGONS = 50_000

Regions = tuple[np.ndarray, np.ndarray]  # (polygons in pixel coordinates, class values)


def _empty() -> Regions:
    return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)


def _concat(parts: list[Regions]) -> Regions:
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _empty()
    return np.concatenate([g for g, _ in parts]), np.concatenate([v for _, v in parts])


def sieve_rows(classes: np.ndarray, min_pixels: int, nodata: int) -> np.ndarray:
    """GDAL's sieve of ``classes`` with the valid pixels as mask; nodata stays nodata."""
    valid = classes != nodata
    if min_pixels <= 1 or not valid.any():
        return classes
    sieved = sieve(classes, size=min_pixels, mask=valid, connectivity=CONNECTIVITY)
    sieved[~valid] = nodata
    return sieved


def polygon_chunks(classes: np.ndarray, nodata: int, row_off: int = 0,
                   chunk: int = CHUNK_POLYGONS) -> Iterator[Regions]:
    """``rasterio.features.shapes`` of ``classes`` in pixel coordinates (rows offset by ``row_off``),
    ``chunk`` polygons at a time, built with shapely's vectorized constructors (``shapely.geometry.shape``
    per GeoJSON dict costs ~4× the polygonization itself)."""
    classes = np.ascontiguousarray(classes, dtype=np.uint8)
    coords, ring_of_coord, poly_of_ring, values = [], [], [], []
    for geom, value in shapes(classes, mask=classes != nodata, transform=Affine.translation(0, row_off),
                              connectivity=CONNECTIVITY):
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


def _build(coords: list, ring_of_coord: list, poly_of_ring: list, values: list) -> Regions:
    ring_index = np.repeat(np.arange(len(ring_of_coord)), ring_of_coord)
    rings = shapely.linearrings(np.asarray(coords, dtype=float), indices=ring_index)
    polygons = shapely.polygons(rings, indices=np.asarray(poly_of_ring))
    return polygons, np.asarray(values, dtype=np.int64)


def to_crs(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel-coordinate polygons mapped through the geotransform (x = c + col·a + row·b, y = f + col·d + row·e)."""
    a, b, c, d, e, f = tuple(transform)[:6]

    def _apply(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([c + col * a + row * b, f + col * d + row * e])

    return shapely.transform(geoms, _apply)


def merge_edge_pieces(geoms: np.ndarray, values: np.ndarray) -> Regions:
    """Unite the pieces of one class that touch (share an edge or a corner); others pass unchanged.

    Pieces meeting only at a corner come out apart again (4-connectivity): the union of such a group is a
    MultiPolygon and its parts are handed back separately.
    """
    if len(geoms) < 2:
        return geoms, values
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = (left < right) & (values[left] == values[right])
    groups = _components(len(geoms), left[pairs], right[pairs])
    out_g, out_v = [], []
    for members in groups:
        if len(members) == 1:
            out_g.append(geoms[members[0]])
            out_v.append(values[members[0]])
            continue
        parts = shapely.get_parts(shapely.union_all(geoms[members]))
        parts = parts[shapely.get_type_id(parts) == 3]  # polygons (no stray lines or points)
        out_g.extend(parts)
        out_v.extend([values[members[0]]] * len(parts))
    result = np.empty(len(out_g), dtype=object)
    result[:] = out_g
    return result, np.asarray(out_v, dtype=np.int64)


def _components(n: int, left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """Connected components of ``n`` nodes joined by the edges ``left[i]–right[i]`` (union–find)."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(n)])
    order = np.argsort(roots, kind="stable")
    splits = np.flatnonzero(np.diff(roots[order])) + 1
    return np.split(order, splits)


class StripRegions:
    """Complete regions of a ``height`` × ``width`` class raster fed top to bottom (see the module notes).

    >>> regions = StripRegions(h, w, nodata=255)
    >>> for rows in blocks:                      # any heights, in order
    ...     for geoms, values in regions.push(rows):
    ...         ...                              # complete regions, pixel coordinates
    >>> for geoms, values in regions.finish():
    ...     ...
    """

    def __init__(self, height: int, width: int, nodata: int, *, min_pixels: int = 0, band_rows: int | None = None,
                 max_halo: int = MAX_HALO, chunk: int = CHUNK_POLYGONS):
        self.height, self.width, self.nodata = int(height), int(width), int(nodata)
        self.min_pixels = int(min_pixels)
        self.halo = min(self.min_pixels, max_halo) if self.min_pixels > 1 else 0
        rows = band_rows_for(self.width) if band_rows is None else int(band_rows)
        self.band_rows = max(1, rows, 2 * self.halo + 1)  # a seam sieve's window stays in one band
        self.chunk = chunk
        self._buffer = np.empty((0, self.width), np.uint8)
        self._buffer_start = 0  # raster row of self._buffer[0]
        self._received = 0
        self._next_row = 0  # first row of the next band to polygonize
        self._open: Regions = _empty()  # pieces touching the lower edge of the last band
        self._pending: np.ndarray | None = None  # a sieved band waiting for the next one (see _sieved_band)

    def push(self, rows: np.ndarray) -> list[Regions]:
        """Add the next ``rows`` (h, width); returns the regions completed by them."""
        rows = np.asarray(rows, dtype=np.uint8)
        if rows.ndim != 2 or rows.shape[1] != self.width or self._received + rows.shape[0] > self.height:
            raise ValueError(f"rows of shape {rows.shape} do not fit a {self.height} × {self.width} raster "
                             f"after {self._received} rows")
        self._buffer = np.concatenate([self._buffer, rows])
        self._received += rows.shape[0]
        done: list[Regions] = []
        while self._next_row < self.height and self._received >= self._needed(self._next_row):
            done.extend(self._band())
        return done

    def finish(self) -> list[Regions]:
        """The remaining regions; every row must have been pushed."""
        if self._received != self.height:
            raise ValueError(f"{self._received} of {self.height} rows were pushed")
        done: list[Regions] = []
        while self._next_row < self.height:
            done.extend(self._band())
        if len(self._open[0]):
            done.append(self._open)
            self._open = _empty()
        return done

    def _needed(self, r0: int) -> int:
        return min(self.height, r0 + self.band_rows + self.halo)

    def _band(self) -> list[Regions]:
        r0 = self._next_row
        r1 = min(self.height, r0 + self.band_rows)
        lo, hi = max(0, r0 - self.halo), min(self.height, r1 + self.halo)
        window = self._buffer[lo - self._buffer_start:hi - self._buffer_start]
        self._next_row = r1
        if self.min_pixels <= 1:
            done = self._polygonize(window, r0, r1)
        else:
            band = sieve_rows(np.array(window), self.min_pixels, self.nodata)[r0 - lo:r1 - lo].copy()
            done = self._sieved_band(band, r0, r1)
        keep_from = max(0, r1 - self.halo)
        self._buffer = self._buffer[keep_from - self._buffer_start:].copy()
        self._buffer_start = keep_from
        return done

    def _sieved_band(self, band: np.ndarray, r0: int, r1: int) -> list[Regions]:
        """Sieved bands are polygonized one band late: the seam with the next band is sieved once more first."""
        done: list[Regions] = []
        if self._pending is not None:
            self._sieve_seam(self._pending, band)
            done = self._polygonize(self._pending, r0 - self._pending.shape[0], r0)
        self._pending = band
        if r1 == self.height:
            done += self._polygonize(band, r0, r1)
            self._pending = None
        return done

    def _sieve_seam(self, upper: np.ndarray, lower: np.ndarray) -> None:
        """Sieve the rows around the edge between two sieved bands (in place).

        Each band's sieve decides where the small regions of its halo go on its own, so the two bands can
        disagree near their common edge and leave a small remnant across it. A second sieve of the final
        rows ``halo + 1`` beyond ``halo`` rows on each side of the edge removes such remnants; only the
        ``halo`` rows next to the edge are taken from it (there, every region is judged as on the whole raster).
        """
        if self.halo == 0:
            return
        reach = 2 * self.halo + 1
        above, below = upper[-reach:], lower[:reach]
        sieved = sieve_rows(np.concatenate([above, below]), self.min_pixels, self.nodata)
        n, h = above.shape[0], min(self.halo, above.shape[0])
        upper[-h:] = sieved[n - h:n]
        lower[:self.halo] = sieved[n:n + self.halo]

    def _polygonize(self, band: np.ndarray, r0: int, r1: int) -> list[Regions]:
        """Polygonize the band's final rows; hand out what is complete, hold what touches its lower edge."""
        done, top, bottom = self._split(band, r0, r1)
        merged = merge_edge_pieces(*_concat([self._open, top]))
        still_open = _touches(merged[0], r1, self.height)
        done.append((merged[0][~still_open], merged[1][~still_open]))
        self._open = _concat([(merged[0][still_open], merged[1][still_open]), bottom])
        return [d for d in done if len(d[0])]

    def _split(self, band: np.ndarray, r0: int, r1: int) -> tuple[list[Regions], Regions, Regions]:
        """The band's polygons: complete ones, ones on its upper edge (to merge), ones only on its lower edge."""
        done: list[Regions] = []
        top: list[Regions] = []
        bottom: list[Regions] = []
        for geoms, values in polygon_chunks(band, self.nodata, r0, self.chunk):
            bounds = shapely.bounds(geoms)
            upper = (bounds[:, 1] == r0) & (r0 > 0)
            lower = _touches(geoms, r1, self.height, bounds)
            done.append((geoms[~upper & ~lower], values[~upper & ~lower]))
            top.append((geoms[upper], values[upper]))
            bottom.append((geoms[~upper & lower], values[~upper & lower]))
        return done, _concat(top), _concat(bottom)


def _touches(geoms: np.ndarray, row: int, height: int, bounds: np.ndarray | None = None) -> np.ndarray:
    """Which pixel-coordinate polygons reach down to ``row`` (never true for the raster's last row)."""
    if row >= height or len(geoms) == 0:
        return np.zeros(len(geoms), bool)
    bounds = shapely.bounds(geoms) if bounds is None else bounds
    return bounds[:, 3] == row


def regions_of(classes: np.ndarray, nodata: int, *, min_pixels: int = 0, band_rows: int | None = None) -> Regions:
    """All regions of an in-memory class raster, in pixel coordinates (streamed band by band)."""
    stream = StripRegions(*classes.shape, nodata, min_pixels=min_pixels, band_rows=band_rows)
    return _concat([*stream.push(classes), *stream.finish()])
