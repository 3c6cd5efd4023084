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
  and the new pieces touching that edge are looked at: pieces of one class that share the edge are matched
  column by column along it (:func:`seam_pairs`, no geometry tests), a region keeps the list of its pieces,
  and once it no longer touches an open edge its pieces are united, once, and handed out. The merged
  regions are the regions of a whole-raster ``rasterio.features.shapes`` (same pixels, same areas; the
  tests check it).
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
BAND_PIXELS = 1 << 22  # ~4 Mpx per band: 4 MiB of classes, ~16 MiB of GDAL's int32 ids
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


def seam_intervals(geoms: np.ndarray, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixel columns each pixel-coordinate polygon covers along the horizontal line ``y = row``:
    ``(piece index, first column, end column)`` of each of its exterior ring's segments lying on that line.

    For a piece lying on one side of the line (all its pixels above it, or all below), these are exactly the
    edges of its pixels next to the line: two pieces on either side are 4-connected across it where their
    intervals overlap (a shared corner is no overlap)."""
    coords, ring = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    on = coords[:, 1] == row
    seg = on[:-1] & on[1:] & (ring[:-1] == ring[1:])
    x0, x1 = coords[:-1, 0][seg], coords[1:, 0][seg]
    return ring[:-1][seg], np.minimum(x0, x1).astype(np.int64), np.maximum(x0, x1).astype(np.int64)


def seam_pairs(above: np.ndarray, below: np.ndarray, row: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (index in ``above``, index in ``below``) of pieces that share an edge along ``y = row`` (pieces of
    one class: the caller passes pieces of one class, or checks the classes of the pairs).

    Each side's intervals are painted onto the ``width`` columns of the line (pieces on one side never overlap)
    and the columns where both sides have a piece give the pairs: linear in the width, no geometry tests."""
    owners = []
    for geoms in (above, below):
        owner = np.full(width, -1, dtype=np.int64)
        piece, x0, x1 = seam_intervals(geoms, row)
        lengths = x1 - x0
        cols = np.repeat(x0, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        owner[cols] = np.repeat(piece, lengths)
        owners.append(owner)
    both = (owners[0] >= 0) & (owners[1] >= 0)
    pairs = np.unique(np.stack([owners[0][both], owners[1][both]], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


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
        self._open_group = np.empty(0, dtype=np.int64)  # the region (group) each open piece belongs to
        self._groups: dict[int, list[Regions]] = {}  # open regions: every piece of each, united once complete
        self._next_group = 0
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
        done.extend(self._close(list(self._groups)))
        self._open, self._open_group = _empty(), np.empty(0, dtype=np.int64)
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
        """Polygonize the band's final rows; hand out what is complete, hold what touches its lower edge.

        Pieces cut at an edge are not united band after band (a region crossing many bands would be united
        again at each, with an ever larger polygon): each open region keeps the list of its pieces, the
        pieces on the edge are matched along it by :func:`seam_pairs` (columns, not geometry tests), and a
        region's pieces are united once, when it no longer reaches the open edge."""
        done, top, bottom = self._split(band, r0, r1)
        top_group = np.arange(self._next_group, self._next_group + len(top[0]), dtype=np.int64)
        self._next_group += len(top[0])
        for g, (geoms, values) in zip(top_group.tolist(), zip(*top, strict=True), strict=True):
            self._groups[g] = [(np.array([geoms], dtype=object), np.array([values], dtype=np.int64))]
        touched = set(self._open_group.tolist()) | set(top_group.tolist())
        rename = self._join_across(top, top_group, r0)
        top_group = np.array([rename.get(g, g) for g in top_group.tolist()], dtype=np.int64)
        still_open = _touches(top[0], r1, self.height)
        bottom_group = np.arange(self._next_group, self._next_group + len(bottom[0]), dtype=np.int64)
        self._next_group += len(bottom[0])
        for g, (geoms, values) in zip(bottom_group.tolist(), zip(*bottom, strict=True), strict=True):
            self._groups[g] = [(np.array([geoms], dtype=object), np.array([values], dtype=np.int64))]
        self._open = _concat([(top[0][still_open], top[1][still_open]), bottom])
        self._open_group = np.concatenate([top_group[still_open], bottom_group])
        open_now = set(self._open_group.tolist())
        complete = sorted({rename.get(g, g) for g in touched} - open_now)
        done.extend(self._close(complete))
        return [d for d in done if len(d[0])]

    def _join_across(self, top: Regions, top_group: np.ndarray, row: int) -> dict[int, int]:
        """Unite the groups of the held pieces and of the new band's top pieces that share an edge along
        ``row``; returns each merged group's new name (its members move to it)."""
        if not len(self._open[0]) or not len(top[0]):
            return {}
        above, below = seam_pairs(self._open[0], top[0], row, self.width)
        same = self._open[1][above] == top[1][below]
        left = self._open_group[above[same]]
        right = top_group[below[same]]
        names = np.unique(np.concatenate([left, right, self._open_group, top_group]))
        index = {g: i for i, g in enumerate(names.tolist())}
        members = _components(len(names), np.array([index[g] for g in left.tolist()], dtype=np.int64),
                              np.array([index[g] for g in right.tolist()], dtype=np.int64))
        rename: dict[int, int] = {}
        for component in members:
            if len(component) < 2:
                continue
            target = int(names[component[0]])
            for i in component[1:].tolist():
                g = int(names[i])
                rename[g] = target
                self._groups[target].extend(self._groups.pop(g))
        self._open_group = np.array([rename.get(g, g) for g in self._open_group.tolist()], dtype=np.int64)
        return rename

    def _close(self, groups: list[int]) -> list[Regions]:
        """Hand out the regions of ``groups`` (complete): pieces of one region united once."""
        singles = [self._groups.pop(g)[0] for g in groups if len(self._groups[g]) == 1]
        out = [_concat(singles)] if singles else []
        for g in [g for g in groups if g in self._groups]:
            geoms, values = _concat(self._groups.pop(g))
            parts = unite_pieces(geoms)
            out.append((parts, np.full(len(parts), values[0], dtype=np.int64)))
        return [o for o in out if len(o[0])]


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


def _holes(geoms: np.ndarray) -> np.ndarray:
    rings, index = shapely.get_rings(geoms, return_index=True)
    exterior = np.r_[True, index[1:] != index[:-1]] if len(index) else np.zeros(0, bool)
    return rings[~exterior]


def unite_pieces(geoms: np.ndarray) -> np.ndarray:
    """The polygon(s) of one region from its pieces cut at band edges (pixel coordinates).

    A piece's holes lie strictly inside its band (a hole cannot reach the band's edge), so they never meet
    another piece: only the outlines are united (a union of simple rings, where the union of the whole
    pieces would overlay every hole of a large region again), and the pieces' holes are put back into the
    united outline, next to the holes the union itself closes.
    """
    outline = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(geoms)))
    if shapely.get_type_id(outline) == 3:
        holes = np.concatenate([_holes(np.array([outline], dtype=object)), _holes(geoms)])
        return np.array([shapely.polygons(shapely.get_exterior_ring(outline), holes=holes)], dtype=object)
    parts = shapely.get_parts(shapely.union_all(geoms))  # not one outline: unite the pieces as they are
    return parts[shapely.get_type_id(parts) == 3]  # polygons (no stray lines or points)


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
