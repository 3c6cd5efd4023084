"""Dense labels from a few strokes: ``eoseg label``.

The Doodler idea with QGIS as the drawing tool. A user draws a few lines or polygons per class over a
scene (a GeoPackage or GeoJSON layer with a class field, in any CRS); eoseg fits a per-pixel classifier
on the drawn pixels and predicts every pixel. Pixels where the classifier is unsure (highest class
probability below ``threshold``) and nodata pixels become 255 (ignore), which training leaves out.

Per-pixel features (:func:`pixel_features`), from a float ``(C, H, W)`` array of reflectance-like values:

- the bands themselves;
- normalized-difference indices of the band pairs present by role: NDWI (green, nir; McFeeters 1996),
  MNDWI (green, swir1; Xu 2006), NDVI (nir, red);
- the local mean and standard deviation of every band and index in square windows of a few sizes
  (3, 7, 15 px), nodata-aware (normalized box filters, so nodata does not pull the statistics to 0).

By default the bands are the raw values divided by a robust per-band scale (:func:`band_scales`) so any
dtype works; a tree classifier is unchanged by such a rescaling. Give ``pixel_features`` reflectance
instead and the indices are the textbook ones.

The classifier is scikit-learn's seeded random forest, trained on a class-balanced sample of the stroke
pixels (at most ``max_samples`` per class). Its accuracy is measured on whole strokes held out from a
first fit (by stroke, not by pixel: pixels of one stroke are near-duplicates), then it is refitted on
every stroke. Prediction streams row blocks, so a full scene fits in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from eoseg.classes import COASTAL, NODATA_CLASS, ClassScheme
from eoseg.errors import BandMappingError, DatasetError, GeoreferenceError, OutputExistsError
from eoseg.scene import Scene, SceneReader, open_scene, preflight

log = logging.getLogger(__name__)

IGNORE = NODATA_CLASS
SCALES = (3, 7, 15)
SPECTRAL_ROLES = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir1",
                  "swir2")
INDICES = (("ndwi", "green", "nir"), ("mndwi", "green", "swir1"), ("ndvi", "nir", "red"))
CLASS_ALIASES = {"white water": 1, "whitewater": 1, "surf": 1, "breaking waves": 1, "foam": 1, "beach": 2,
                 "land": 3}
LINE_TYPES = {"LineString", "MultiLineString", "Point", "MultiPoint"}
POLYGON_TYPES = {"Polygon", "MultiPolygon"}
BLOCK_PIXELS = 262_144
EXISTS_FIX = "pass --overwrite or choose another --out"


# ---------------------------------------------------------------------------------------------- features


def feature_names(roles: Sequence[str], scales: Sequence[int] = SCALES) -> list[str]:
    """Names of the rows :func:`pixel_features` returns, in order."""
    base = list(roles) + [name for name, a, b in INDICES if a in roles and b in roles]
    return base + [f"{stat}{size}_{name}" for size in scales for name in base for stat in ("mean", "std")]


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a − b) / (a + b), 0 where a + b is 0."""
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, (a - b) / np.where(total != 0, total, 1), 0).astype(np.float32)


def _local_stats(base: np.ndarray, weight: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each row of ``base`` over valid pixels in a ``size`` × ``size`` window."""
    from scipy.ndimage import uniform_filter

    axes = (-2, -1)
    w = uniform_filter(weight, size, mode="reflect", axes=axes)
    s1 = uniform_filter(base * weight, size, mode="reflect", axes=axes)
    s2 = uniform_filter(base * base * weight, size, mode="reflect", axes=axes)
    safe = np.where(w > 1e-6, w, 1.0)
    mean = np.where(w > 1e-6, s1 / safe, 0.0)
    var = np.where(w > 1e-6, s2 / safe - mean * mean, 0.0)
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 0.0)).astype(np.float32)


def pixel_features(image: np.ndarray, valid: np.ndarray, roles: Sequence[str],
                   scales: Sequence[int] = SCALES) -> np.ndarray:
    """``(F, H, W)`` float32 features (see the module docstring) of a float ``(C, H, W)`` image.

    ``roles`` names each band (``blue``, ``nir``, ...). Invalid pixels are left out of the local
    statistics of their neighbours; their own features are 0.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.shape[0] != len(roles):
        raise ValueError(f"{image.shape[0]} bands but {len(roles)} roles")
    by_role = {r: image[i] for i, r in enumerate(roles)}
    indices = [normalized_difference(by_role[a], by_role[b]) for _, a, b in INDICES if a in by_role and b in by_role]
    base = np.concatenate([image, np.stack(indices)]) if indices else image.copy()
    weight = valid.astype(np.float32)
    base *= weight
    parts = [base]
    for size in scales:
        mean, std = _local_stats(base, weight[np.newaxis], size)
        parts.append(np.stack([mean, std], axis=1).reshape(-1, *base.shape[1:]))
    features = np.concatenate(parts)
    features[:, ~valid] = 0.0
    return features


def band_scales(scene: Scene) -> np.ndarray:
    """A robust scale per band: the 98th percentile of the absolute valid values (from :func:`preflight`)."""
    stats = preflight(scene)
    scale = np.maximum(np.abs(np.array(stats.p98, np.float64)), np.abs(np.array(stats.p02, np.float64)))
    return np.where(scale > 0, scale, 1.0).astype(np.float32)


def feature_bands(scene_roles: Sequence[str]) -> list[int]:
    """1-based indexes of the spectral bands (not QA, thermal, pan, cirrus); all bands when none is known."""
    spectral = [i + 1 for i, r in enumerate(scene_roles) if r in SPECTRAL_ROLES]
    return spectral or list(range(1, len(scene_roles) + 1))


# ---------------------------------------------------------------------------------------------- strokes


@dataclass
class Strokes:
    """Stroke geometries in the scene's CRS, each with its class id and a stroke id (1-based)."""

    path: Path
    geometries: list  # shapely geometries
    class_ids: np.ndarray  # (N,) int
    warnings: list[str] = field(default_factory=list)

    @property
    def stroke_ids(self) -> np.ndarray:
        return np.arange(1, len(self.geometries) + 1, dtype=np.int32)


def class_id_of(value: object, scheme: ClassScheme) -> int | None:
    """The class id a field value stands for: an id (0..3, also '2' or 2.0) or a name; None if unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        as_int = int(value)
        return as_int if as_int == value and as_int in scheme.ids else None
    text = re.sub(r"[\s_\-]+", " ", str(value)).strip().lower()
    if text.isdigit():
        return class_id_of(int(text), scheme)
    names = {re.sub(r"[\s_\-]+", " ", n).lower(): c.id for c in scheme.classes for n in (c.name,)}
    if text in names:
        return names[text]
    alias = CLASS_ALIASES.get(text)
    return alias if scheme is COASTAL else None


def _allowed_values(scheme: ClassScheme) -> str:
    return ", ".join(f"{c.id}={c.name}" for c in scheme.classes)


def read_strokes(path: str | Path, scene: Scene, field: str = "class", stroke_width: float = 1.0,
                 scheme: ClassScheme = COASTAL) -> Strokes:
    """Read, check and reproject the strokes; lines are buffered to ``stroke_width`` pixels (if > 1)."""
    import geopandas as gpd

    path = Path(path)
    if not path.is_file():
        raise DatasetError("stroke file does not exist", path=path, fix="pass a GeoPackage or GeoJSON of strokes")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises its own DataSourceError, not a stable type to catch
        raise DatasetError(f"cannot read the stroke layer ({str(exc).splitlines()[0]})", path=path,
                           fix="pass a GeoPackage or GeoJSON of lines or polygons") from exc
    fields = [c for c in gdf.columns if c != gdf.geometry.name] if len(gdf.columns) else []
    if field not in gdf.columns:
        raise DatasetError(f"the stroke layer has no field {field!r}", path=path,
                           fix=f"pass --field with one of: {', '.join(fields) or '(no fields)'}")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.empty:
        raise DatasetError("the stroke layer holds no geometries", path=path, fix="draw lines or polygons")
    kinds = set(gdf.geometry.geom_type)
    if kinds - LINE_TYPES - POLYGON_TYPES:
        raise DatasetError(f"unsupported geometry type(s) {sorted(kinds - LINE_TYPES - POLYGON_TYPES)}", path=path,
                           fix="draw lines or polygons")
    ids = [class_id_of(v, scheme) for v in gdf[field]]
    unknown = sorted({str(v) for v, i in zip(gdf[field], ids, strict=True) if i is None})
    if unknown:
        raise DatasetError(f"unknown class value(s) {', '.join(map(repr, unknown))} in field {field!r}", path=path,
                           fix=f"use class ids or names: {_allowed_values(scheme)}")
    if gdf.crs is None:
        log.warning("%s: the stroke layer has no CRS; assuming the scene's", path)
    elif scene.crs is not None and gdf.crs != scene.crs:
        gdf = gdf.to_crs(scene.crs)
    geoms = list(gdf.geometry)
    if stroke_width > 1:
        radius = stroke_width / 2 * abs(scene.transform.a)
        geoms = [g.buffer(radius) if g.geom_type in LINE_TYPES else g for g in geoms]
    strokes = Strokes(path, geoms, np.array(ids, dtype=np.int64))
    _check_extent(strokes, scene)
    _check_classes(strokes, scheme)
    return strokes


def _check_extent(strokes: Strokes, scene: Scene) -> None:
    from shapely.geometry import box

    left, top = scene.transform * (0, 0)
    right, bottom = scene.transform * (scene.width, scene.height)
    frame = box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    inside = [g.intersects(frame) for g in strokes.geometries]
    if not any(inside):
        raise DatasetError("no stroke lies inside the scene", path=strokes.path,
                           fix="draw the strokes over the scene (check the layer's CRS)")
    if not all(inside):
        strokes.warnings.append(f"{len(inside) - sum(inside)} stroke(s) lie outside the scene and are not used")


def _check_classes(strokes: Strokes, scheme: ClassScheme) -> None:
    missing = [c.name for c in scheme.classes if c.id not in set(strokes.class_ids.tolist())]
    if missing:
        strokes.warnings.append(f"no strokes for {', '.join(missing)}: those classes will never be labelled")


def rasterize_strokes(strokes: Strokes, window: Window, transform) -> tuple[np.ndarray, np.ndarray]:
    """``(class ids uint8 (255 = no stroke), stroke ids int32 (0 = none))`` on ``window`` of the scene.

    Polygons fill (pixel centres inside); lines (and points) burn every pixel they touch. Where strokes
    overlap, the later one wins, lines over polygons.
    """
    from rasterio.features import rasterize
    from rasterio.windows import transform as window_transform

    shape = (int(window.height), int(window.width))
    wt = window_transform(window, transform)
    classes = np.full(shape, IGNORE, np.uint8)
    ids = np.zeros(shape, np.int32)
    for touched in (False, True):
        picks = [i for i, g in enumerate(strokes.geometries) if (g.geom_type in LINE_TYPES) == touched]
        if not picks:
            continue
        for out, values, fill in ((classes, strokes.class_ids, IGNORE), (ids, strokes.stroke_ids, 0)):
            burnt = rasterize(((strokes.geometries[i], int(values[i])) for i in picks), out_shape=shape,
                              transform=wt, fill=fill, all_touched=touched, dtype=out.dtype.name)
            np.copyto(out, burnt, where=burnt != fill)
    return classes, ids


# ---------------------------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Block:
    """Rows ``row_off .. row_off + height`` of the scene, read with ``halo`` extra rows on each side."""

    read: Window
    core: Window
    top: int  # rows of halo above the core in ``read``


def blocks(scene: Scene, halo: int, block_pixels: int = BLOCK_PIXELS) -> Iterator[Block]:
    rows = max(16, block_pixels // max(1, scene.width))
    for r0 in range(0, scene.height, rows):
        r1 = min(scene.height, r0 + rows)
        a, b = max(0, r0 - halo), min(scene.height, r1 + halo)
        yield Block(Window(0, a, scene.width, b - a), Window(0, r0, scene.width, r1 - r0), r0 - a)


def block_features(reader: SceneReader, block: Block, scale: np.ndarray, roles: Sequence[str],
                   scales: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(features (F, h, w), valid (h, w))`` of the block's core rows."""
    data, valid = reader.read(block.read)
    data /= scale[:, None, None]
    feats = pixel_features(data, valid, roles, scales)
    rows = slice(block.top, block.top + int(block.core.height))
    return feats[:, rows], valid[rows]


# ---------------------------------------------------------------------------------------------- training


@dataclass
class Samples:
    features: np.ndarray  # (N, F) float32
    classes: np.ndarray  # (N,) int
    strokes: np.ndarray  # (N,) int (stroke id)
    pixels: dict[int, int]  # class id -> stroke pixels in the scene (before sampling)


class _Sampler:
    """A uniform sample without replacement of at most ``cap`` pixels per class, kept while streaming."""

    def __init__(self, cap: int, seed: int):
        self.cap = cap
        self.rng = np.random.default_rng(seed)
        self.kept: dict[int, tuple[np.ndarray, ...]] = {}
        self.pixels: dict[int, int] = {}

    def add(self, feats: np.ndarray, classes: np.ndarray, ids: np.ndarray) -> None:
        for cid in np.unique(classes):
            where = classes == cid
            self.pixels[int(cid)] = self.pixels.get(int(cid), 0) + int(where.sum())
            keys = self.rng.random(int(where.sum()))
            new = (keys, feats[:, where].T, ids[where])
            old = self.kept.get(int(cid))
            merged = new if old is None else tuple(np.concatenate([o, n]) for o, n in zip(old, new, strict=True))
            if merged[0].size > self.cap:
                keep = np.argpartition(merged[0], self.cap)[: self.cap]
                merged = tuple(m[keep] for m in merged)
            self.kept[int(cid)] = merged

    def samples(self) -> Samples:
        cids = sorted(self.kept)
        return Samples(
            features=np.concatenate([self.kept[c][1] for c in cids]).astype(np.float32),
            classes=np.concatenate([np.full(self.kept[c][0].size, c) for c in cids]),
            strokes=np.concatenate([self.kept[c][2] for c in cids]),
            pixels={c: self.pixels[c] for c in cids},
        )


def make_classifier(seed: int, trees: int = 100):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=trees, min_samples_leaf=2, max_features="sqrt",
                                  class_weight="balanced", n_jobs=-1, random_state=seed)


def held_out_split(classes: np.ndarray, strokes: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A boolean mask of held-out samples: a ``share`` of the strokes (at least one) of every class that has
    two or more strokes; classes with a single stroke stay in training."""
    rng = np.random.default_rng(seed)
    held = np.zeros(classes.shape, bool)
    for cid in np.unique(classes):
        ids = np.unique(strokes[classes == cid])
        if ids.size < 2:
            continue
        n = min(ids.size - 1, max(1, round(share * ids.size)))
        held |= np.isin(strokes, rng.choice(ids, n, replace=False)) & (classes == cid)
    return held


def held_out_accuracy(samples: Samples, scheme: ClassScheme, seed: int, share: float = 0.25) -> dict:
    """Accuracy on held-out strokes of a classifier fitted on the other strokes."""
    held = held_out_split(samples.classes, samples.strokes, share, seed)
    if not held.any() or held.all():
        return {"accuracy": None, "note": "draw at least two strokes of a class to measure a held-out accuracy"}
    clf = make_classifier(seed).fit(samples.features[~held], samples.classes[~held])
    predicted = clf.predict(samples.features[held])
    truth = samples.classes[held]
    recall = {scheme.name_of(int(c)): float((predicted[truth == c] == c).mean()) for c in np.unique(truth)}
    return {"accuracy": float((predicted == truth).mean()), "balanced_accuracy": float(np.mean(list(recall.values()))),
            "recall": recall, "held_out_pixels": int(held.sum()),
            "held_out_strokes": int(np.unique(samples.strokes[held]).size)}


# ---------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class LabelPaths:
    labels: Path
    qml: Path
    quicklook: Path
    report: Path

    def files(self) -> list[Path]:
        from eoseg.outputs.atomic import aux_path

        return [self.labels, aux_path(self.labels), self.qml, self.quicklook, self.report]


def plan_label_outputs(out_dir: Path, stem: str, overwrite: bool) -> LabelPaths:
    """The output names; refuses existing ones without ``overwrite`` and unwritable directories, before any work."""
    from eoseg.outputs.atomic import _check_stem, _check_writable, _make_dir

    _check_stem(stem)
    out_dir = Path(out_dir)
    _make_dir(out_dir)
    paths = LabelPaths(out_dir / f"{stem}_labels.tif", out_dir / f"{stem}_labels.qml",
                       out_dir / f"{stem}_labels.png", out_dir / f"{stem}_labels.json")
    if not overwrite:
        for path in paths.files():
            if path.exists() or path.is_symlink():
                raise OutputExistsError("output exists", path=path, fix=EXISTS_FIX)
    _check_writable(out_dir, stem)
    return paths


@dataclass
class LabelResult:
    paths: LabelPaths
    counts: dict[str, int]  # class name / 'ignore' / 'nodata' -> pixels
    stroke_pixels: dict[str, int]
    samples: dict[str, int]
    held_out: dict
    threshold: float
    warnings: list[str]
    features: list[str]
    bands: list[int]
    window: list[int] | None = None

    def to_dict(self) -> dict:
        return {"labels": str(self.paths.labels), "counts": self.counts, "stroke_pixels": self.stroke_pixels,
                "samples": self.samples, "held_out": self.held_out, "threshold": self.threshold,
                "warnings": self.warnings, "features": self.features, "bands": self.bands, "window": self.window}

    def summary(self) -> str:
        total = sum(self.counts.values()) or 1
        counts = ", ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in self.counts.items())
        acc = self.held_out.get("accuracy")
        held = (f"held-out accuracy {acc:.3f} on {self.held_out['held_out_strokes']} stroke(s)" if acc is not None
                else "held-out accuracy: n/a (draw at least two strokes per class)")
        return f"{self.paths.labels}: {counts}; {held}"


def _write_report(path: Path, result: LabelResult) -> None:
    from eoseg.outputs.atomic import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- label


def _scene_for_labels(scene_path: Path, bands: Sequence[int] | None) -> Scene:
    try:
        scene = open_scene(scene_path)  # every band, named by role ('band<i>' where unknown)
    except GeoreferenceError as exc:
        raise GeoreferenceError(exc.problem.replace(", so outputs could not be placed on a map", ""), path=exc.path,
                                fix="strokes are drawn in map coordinates: georeference the scene first "
                                    "(e.g. gdal_translate -a_srs/-a_ullr)") from exc
    chosen = list(bands) if bands else feature_bands(scene.roles)
    bad = [b for b in chosen if not 1 <= b <= scene.count]
    if bad:
        raise BandMappingError(f"band index {bad[0]} is out of range; the scene has {scene.count} band(s)",
                               path=scene_path, fix=f"use 1-based indexes between 1 and {scene.count}")
    return open_scene(scene_path, roles=[scene.roles[b - 1] for b in chosen], bands=chosen)


def inside(core: Window, area: Window | None) -> np.ndarray:
    """(h, w) bool: which pixels of the block ``core`` lie in ``area`` (all of them when ``area`` is None)."""
    shape = (int(core.height), int(core.width))
    if area is None:
        return np.ones(shape, bool)
    rows = np.arange(int(core.row_off), int(core.row_off) + shape[0])
    cols = np.arange(int(core.col_off), int(core.col_off) + shape[1])
    in_rows = (rows >= area.row_off) & (rows < area.row_off + area.height)
    in_cols = (cols >= area.col_off) & (cols < area.col_off + area.width)
    return in_rows[:, None] & in_cols[None, :]


def check_area(area: Sequence[int] | None, scene: Scene) -> Window | None:
    """``(col_off, row_off, width, height)`` as a Window inside the scene, or a one-line error."""
    if area is None:
        return None
    col, row, width, height = (int(v) for v in area)
    if width <= 0 or height <= 0 or col < 0 or row < 0 or col + width > scene.width or row + height > scene.height:
        raise DatasetError(f"window {col},{row},{width},{height} is not inside the {scene.width}×{scene.height} scene",
                           path=scene.path, fix="give --window COL,ROW,WIDTH,HEIGHT in pixels within the scene")
    return Window(col, row, width, height)


def collect_samples(scene: Scene, strokes: Strokes, scale: np.ndarray, scales: Sequence[int], max_samples: int,
                    seed: int, area: Window | None = None) -> Samples:
    """Features of a class-balanced sample of the stroke pixels in ``area`` (only blocks with strokes are read)."""
    sampler = _Sampler(max_samples, seed)
    with SceneReader(scene) as reader:
        for block in blocks(scene, max(scales) // 2):
            classes, ids = rasterize_strokes(strokes, block.core, scene.transform)
            classes[~inside(block.core, area)] = IGNORE
            if not (classes != IGNORE).any():
                continue
            feats, valid = block_features(reader, block, scale, scene.roles, scales)
            keep = (classes != IGNORE) & valid
            sampler.add(feats[:, keep], classes[keep], ids[keep])
    if not sampler.kept:
        where = " inside the window" if area is not None else ""
        raise DatasetError(f"no stroke covers a valid pixel of the scene{where}", path=strokes.path,
                           fix=f"draw the strokes over valid (not nodata) pixels{where}")
    return sampler.samples()


def _predict_block(clf, feats: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    out = np.full(valid.shape, IGNORE, np.uint8)
    if valid.any():
        proba = clf.predict_proba(feats[:, valid].T)
        best = proba.argmax(axis=1)
        labels = clf.classes_[best].astype(np.uint8)
        labels[proba[np.arange(best.size), best] < threshold] = IGNORE
        out[valid] = labels
    return out


def label_scene(scene_path: str | Path, strokes_path: str | Path, out_dir: str | Path, *, field: str = "class",
                stroke_width: float = 1.0, threshold: float = 0.7, bands: Sequence[int] | None = None,
                seed: int = 0, max_samples: int = 20_000, scales: Sequence[int] = SCALES, overwrite: bool = False,
                quicklook: bool = True, window: Sequence[int] | None = None,
                scheme: ClassScheme = COASTAL) -> LabelResult:
    """Dense labels for ``scene_path`` from the strokes in ``strokes_path``; writes into ``out_dir``:

    ``<stem>_labels.tif`` (uint8 class ids, 255 = ignore / nodata, COG with palette and category names),
    ``<stem>_labels.qml`` (QGIS style), ``<stem>_labels.png`` (true colour | labels) and
    ``<stem>_labels.json`` (pixel counts per class, stroke pixels, held-out accuracy, warnings).

    ``window`` ``(col_off, row_off, width, height)`` labels only that part of the scene (strokes outside it
    are not used; pixels outside it are 255), e.g. to keep an evaluation area out of the labels.
    """
    from eoseg.outputs.cog import RasterSink
    from eoseg.outputs.qgis import raster_qml, write_qml

    if not 0.0 <= threshold <= 1.0:
        raise DatasetError(f"threshold {threshold} is not a probability", path="--threshold",
                           fix="use a value between 0 and 1 (e.g. 0.7)")
    scene = _scene_for_labels(Path(scene_path), bands)
    area = check_area(window, scene)
    paths = plan_label_outputs(Path(out_dir), scene.stem, overwrite)
    strokes = read_strokes(strokes_path, scene, field, stroke_width, scheme)
    for text in strokes.warnings:
        log.warning("%s: %s", strokes.path, text)
    scale = band_scales(scene)
    samples = collect_samples(scene, strokes, scale, scales, max_samples, seed, area)
    if len(samples.pixels) < 2:
        raise DatasetError(f"strokes cover only one class ({scheme.name_of(next(iter(samples.pixels)))})",
                           path=strokes.path, fix="draw strokes of at least two classes")
    held = held_out_accuracy(samples, scheme, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clf = make_classifier(seed).fit(samples.features, samples.classes)
    counts = np.zeros(258, np.int64)  # class ids, then 256 = nodata, 257 = outside the window
    with SceneReader(scene) as reader, RasterSink(paths.labels, scene.width, scene.height, 1, "uint8", scene.crs,
                                                  scene.transform, IGNORE, "classes", scheme) as sink:
        for block in blocks(scene, max(scales) // 2):
            within = inside(block.core, area)
            if not within.any():
                sink.write(np.full(within.shape, IGNORE, np.uint8), block.core)
                counts[257] += within.size
                continue
            feats, valid = block_features(reader, block, scale, scene.roles, scales)
            labels = _predict_block(clf, feats, valid & within, threshold)
            sink.write(labels, block.core)
            counts[:256] += np.bincount(labels[valid & within], minlength=256)
            counts[256] += int((~valid & within).sum())
            counts[257] += int((~within).sum())
    write_qml(paths.qml, raster_qml(scheme))
    if quicklook:
        _quicklook(scene, strokes, paths, scheme)
    result = LabelResult(
        paths=paths,
        counts={**{c.name: int(counts[c.id]) for c in scheme.classes}, "ignore": int(counts[IGNORE]),
                "nodata": int(counts[256]), "outside": int(counts[257])},
        stroke_pixels={scheme.name_of(c): n for c, n in samples.pixels.items()},
        samples={scheme.name_of(int(c)): int((samples.classes == c).sum()) for c in np.unique(samples.classes)},
        held_out=held, threshold=threshold, warnings=list(strokes.warnings),
        features=feature_names(scene.roles, scales), bands=list(scene.band_indexes),
        window=None if area is None else [int(area.col_off), int(area.row_off), int(area.width), int(area.height)],
    )
    _write_report(paths.report, result)
    return result


def _quicklook(scene: Scene, strokes: Strokes, paths: LabelPaths, scheme: ClassScheme) -> None:
    try:
        write_label_quicklook(scene, strokes, paths.labels, paths.quicklook, scheme)
    except BandMappingError as exc:
        log.warning("%s: no quicklook (%s)", scene.path, exc.problem)


def _draw_strokes(ax, strokes: Strokes, scene: Scene, factor: float, scheme: ClassScheme) -> None:
    """The strokes in their class colours (dark edged, so white water shows) on pixel-coordinate axes."""
    from shapely.affinity import affine_transform

    inv = ~scene.transform
    to_pixels = [inv.a / factor, inv.b / factor, inv.d / factor, inv.e / factor, inv.c / factor, inv.f / factor]
    colours = {c.id: np.array(c.colour) / 255 for c in scheme.classes}
    for geom, cid in zip(strokes.geometries, strokes.class_ids, strict=True):
        geom = affine_transform(geom, to_pixels)
        parts = getattr(geom, "geoms", [geom])
        for part in parts:
            line = part.exterior if part.geom_type == "Polygon" else part
            x, y = np.asarray(line.coords).T[:2] if line.geom_type != "Point" else ([line.x], [line.y])
            ax.plot(x, y, color="black", lw=3.2, solid_capstyle="round", marker="o" if len(x) == 1 else None)
            ax.plot(x, y, color=colours[int(cid)], lw=1.8, solid_capstyle="round")


def write_label_quicklook(scene: Scene, strokes: Strokes, labels_path: Path, png_path: Path,
                          scheme: ClassScheme = COASTAL) -> Path:
    """A PNG: true colour with the strokes, SWIR1/NIR/green false colour (when present), and the labels."""
    import rasterio
    from rasterio.enums import Resampling

    from eoseg.outputs.quicklook import (
        MAX_SIDE,
        _decimated_shape,
        class_image,
        finish_figure,
        panel_figure,
        true_colour,
    )

    shape = _decimated_shape(scene.height, scene.width, MAX_SIDE)
    factor = scene.height / shape[0]
    with rasterio.open(labels_path) as ds:
        labels = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    panels = [("true colour and strokes", true_colour(scene.path, shape))]
    with contextlib.suppress(BandMappingError):  # no SWIR1 or NIR: no false-colour panel
        panels.append(("SWIR1 / NIR / green", true_colour(scene.path, shape, roles=("swir1", "nir", "green"))))
    panels.append(("labels (dark: 255, ignore)", class_image(labels, scheme)))
    fig, axes = panel_figure(panels, shape)
    _draw_strokes(axes[0], strokes, scene, factor, scheme)
    axes[0].set_xlim(-0.5, shape[1] - 0.5)
    axes[0].set_ylim(shape[0] - 0.5, -0.5)
    finish_figure(fig, png_path, scheme, f"{scene.path.name}: eoseg label", nodata_label="ignore / nodata")
    return png_path
