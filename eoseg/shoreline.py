"""The shoreline of a scene: what ``eoseg predict --shoreline`` adds to a prediction.

Two methods (``--shoreline-method``):

- ``prob`` (default): the 0.5 contour of P(water) + P(white water), from the blended probabilities as the
  predict loop emits them (:class:`eoseg.outputs.shoreline.ShorelineWriter` is one more row consumer);
- ``index``: the approach of CoastSat (Vos et al., 2019, "CoastSat: a Google Earth Engine-enabled Python
  toolkit to extract shorelines from publicly available satellite imagery", Environmental Modelling &
  Software 122, 104528): the contour of a water index, MNDWI = (green − SWIR1) / (green + SWIR1), at a
  threshold chosen per scene with Otsu's method between the index values of sand and of water pixels near
  the sand–water boundary, the two classes weighted equally. Water here is water and white water, as for
  ``prob``, so both methods trace the same boundary (the landward edge of the surf). Scenes without SWIR use NDWI
  = (green − NIR) / (green + NIR). The classes come from the model; the index from the scene's reflectance.
  It needs the classes first, so it runs after the prediction as two passes over the scene, strip by strip
  (histograms, then tracing): memory stays bounded. (Implemented from the paper's description; no CoastSat
  code is used.)

Lines keep the same rules either way (sand buffer, nodata masked, ``--min-shoreline-length``; see
:mod:`eoseg.outputs.shoreline`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from eoseg.classes import ClassScheme
from eoseg.errors import BandMappingError, EosegError
from eoseg.outputs.shoreline import (
    METHODS,
    ShorelineInfo,
    ShorelineWriter,
    near,
    sand_id,
    sand_radius_px,
    water_ids,
    water_probability,
)
from eoseg.outputs.stac import scene_datetime
from eoseg.radiometry import scene_scaling
from eoseg.scene import Scene, SceneReader, detect_sensor, open_scene

log = logging.getLogger(__name__)

INDEX_BANDS = (("green", "swir1", "mndwi"), ("green", "nir", "ndwi"))
HIST_BINS = np.linspace(-1.0, 1.0, 2001)
MIN_PIXELS = 20  # fewer sand or water pixels near their boundary: no per-scene threshold, the index's 0 is used
BOUNDARY_M = 150.0  # sand and water pixels this close to each other sample the threshold (white water between)
STRIP_ROWS = 256

__all__ = ["METHODS", "index_shoreline", "otsu_threshold", "shoreline_info", "shoreline_writer",
           "water_index", "water_probability"]


def shoreline_info(scene: Scene, method: str) -> ShorelineInfo:
    """Scene id, acquisition time (ISO 8601; None when only the file's mtime tells) and sensor for the
    attributes (the time of day matters to a tide correction)."""
    product = scene.product
    if product is not None:  # an archive product says when and what it is in its metadata
        when = product.datetime
        return ShorelineInfo(scene=scene.stem, date=when.isoformat().replace("+00:00", "Z") if when else None,
                             sensor=product.sensor, method=method)
    when, source = scene_datetime(scene.path)
    try:
        with rasterio.open(scene.path) as ds:
            tags = dict(ds.tags())
    except (rasterio.errors.RasterioError, OSError):
        tags = {}
    date = None if source == "file_mtime" else when.isoformat().replace("+00:00", "Z")
    return ShorelineInfo(scene=scene.stem, date=date,
                         sensor=detect_sensor(scene.path.name, tags), method=method)


def shoreline_writer(path: Path | None, scene: Scene, scheme: ClassScheme, *, method: str, min_length_m: float):
    """The row consumer of the ``prob`` method for the predict loop (a null context otherwise)."""
    if path is None or method != "prob":
        return contextlib.nullcontext()
    return ShorelineWriter(path, scene.shape, scene.transform, scene.crs, scheme, shoreline_info(scene, method),
                           level=0.5, min_length_m=min_length_m)


# ---------------------------------------------------------------------------------------------- index method


def water_index(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(a − b) / (a + b) of two bands (2, n, W) (green and SWIR1 / NIR): NaN where invalid or a + b ≤ 0."""
    a, b = data[0].astype(np.float32), data[1].astype(np.float32)
    total = a + b
    ok = valid & (total > 0)
    out = np.full(a.shape, np.nan, np.float32)
    np.divide(a - b, total, out=out, where=ok)
    return out


def otsu_threshold(hist_a: np.ndarray, hist_b: np.ndarray, edges: np.ndarray = HIST_BINS) -> float:
    """Otsu's threshold between two samples given as histograms on ``edges``, each weighted to total 1.

    The threshold maximizes the between-class variance of the pooled, balanced histogram (a class with many
    more pixels, usually water, would otherwise pull it); where the two do not overlap, every threshold in the
    gap does, and the middle of the gap is taken.
    """
    p = hist_a / max(hist_a.sum(), 1) + hist_b / max(hist_b.sum(), 1)
    p = p / p.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m = np.cumsum(p * centres)
    w1 = 1 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m[-1] * w0 - m) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau where the classes do not overlap
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def _index_scene(scene: Scene) -> tuple[Scene, str]:
    """The scene again with the index's two bands, masked as the prediction was (product quality layers)."""
    mask = scene.mask.classes if scene.mask is not None else ("none" if scene.product is not None else None)
    for a, b, name in INDEX_BANDS:
        try:
            return open_scene(scene.path, roles=(a, b), allow_ungeoreferenced=not scene.georeferenced,
                              mask=mask), name
        except BandMappingError:
            continue
    raise BandMappingError("has no green and SWIR1 (or NIR) bands for a water index", path=scene.path,
                           fix="use --shoreline-method prob")


class _IndexStrips:
    """The water index of a scene in strips (reflectance when the scaling is known), with a halo of rows."""

    def __init__(self, scene: Scene, scale, offset):
        self.scene, self.name = _index_scene(scene)
        try:
            self.scaling = scene_scaling(self.scene, scale, offset)
        except EosegError as exc:  # units unknown: the index of the raw values (exact when the offset is 0)
            log.warning("%s: water index on the file's values (%s)", scene.path.name, exc.problem)
            self.scaling = None

    def read(self, reader: SceneReader, r0: int, r1: int) -> np.ndarray:
        data, valid = reader.read(Window(0, r0, self.scene.width, r1 - r0))
        if self.scaling is not None:
            data = self.scaling.apply(data)
        return water_index(data, valid)


def _strips(height: int, rows: int = STRIP_ROWS):
    for r0 in range(0, height, rows):
        yield r0, min(r0 + rows, height)


def index_shoreline(scene: Scene, classes_path: Path, path: Path, scheme: ClassScheme, *, min_length_m: float,
                    scale=None, offset=None) -> float:
    """Write the ``index`` method's shoreline of ``scene`` (classes from the finished class raster) to ``path``.

    Returns the threshold used (also written as each line's ``level``).
    """
    strips = _IndexStrips(scene, scale, offset)
    radius = sand_radius_px(scene.transform, scene.crs, scene.shape, BOUNDARY_M)
    water = water_ids(scheme)
    sand = sand_id(scheme)
    hist_sand = np.zeros(len(HIST_BINS) - 1)
    hist_water = np.zeros(len(HIST_BINS) - 1)
    with SceneReader(strips.scene) as reader, rasterio.open(classes_path) as classes_ds:
        h = scene.height
        for r0, r1 in _strips(h):  # pass 1: index values of sand and water near their boundary
            lo, hi = max(r0 - radius, 0), min(r1 + radius, h)
            classes = classes_ds.read(1, window=Window(0, lo, scene.width, hi - lo))
            index = strips.read(reader, lo, hi)
            boundary = (near(classes == sand, radius) & near(np.isin(classes, water), radius))[r0 - lo:r1 - lo]
            core_c, core_i = classes[r0 - lo:r1 - lo], index[r0 - lo:r1 - lo]
            for ids, hist in (([sand], hist_sand), (water, hist_water)):
                values = core_i[boundary & np.isin(core_c, ids) & np.isfinite(core_i)]
                hist += np.histogram(values, bins=HIST_BINS)[0]
        if min(hist_sand.sum(), hist_water.sum()) < MIN_PIXELS:
            level = 0.0
            log.warning("%s: too few sand or water pixels near their boundary for a per-scene %s threshold; "
                        "using 0", scene.path.name, strips.name)
        else:
            level = otsu_threshold(hist_sand, hist_water)
        info = shoreline_info(scene, f"index:{strips.name}")
        with ShorelineWriter(path, scene.shape, scene.transform, scene.crs, scheme, info, level=level,
                             min_length_m=min_length_m) as out:
            for r0, r1 in _strips(h):  # pass 2: trace
                classes = classes_ds.read(1, window=Window(0, r0, scene.width, r1 - r0))
                out.write_rows(classes, strips.read(reader, r0, r1))
    return level
