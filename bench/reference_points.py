"""The ``points`` reference of bench/models.py: interpreted check points, scored with the stratified estimator.

``training/sample_points.py`` draws a stratified random sample of pixels in each coastal test block (strata: the
classes of the block's densified reference and its "unsure" pixels) and each point's class is then decided by
eye from true- and false-colour chips, without any model's map in view (``training/points/<site>.gpkg``,
``class``; ``unsure`` where the pixel could not be told, e.g. a mixed pixel on a boundary). Unlike the ``dense``
reference, no classifier made these labels, and the pixels a densifier could not decide are scored too.

A stratified sample over-represents the small strata (sand, white water), so each point stands for
``stratum_pixels / n_stratum`` pixels: the estimated confusion matrix, in pixels, is
``sum_h N_h / n_h * n_hij`` (Olofsson et al. 2014, "Good practices for estimating area and assessing accuracy of
land change", Remote Sensing of Environment 148, eq. 9 in area units), where ``n_h`` counts the stratum's decided
points. With a second phase drawn where maps disagree (``training/sample_points.py --disagree``), the strata are
the cells ``cell`` (a stratum's pixels where the maps agree, or disagree) of ``cell_pixels`` pixels each: every
point is a uniform draw from its cell, so the same estimator applies cell by cell (post-stratification). IoU and
mean IoU follow from it as from any confusion matrix. The paired bootstrap resamples the points
within each stratum and site and reports the 2.5 and 97.5 percentiles of a contender's mean IoU minus another's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eoseg.classes import COASTAL
from eoseg.strokes import class_id_of

UNSURE = "unsure"
K = len(COASTAL)


@dataclass
class Points:
    """The decided check points of one block: block pixel, interpreted class id, stratum and its pixel count."""
    rows: np.ndarray
    cols: np.ndarray
    truth: np.ndarray
    stratum: np.ndarray
    stratum_pixels: np.ndarray
    unsure: int  # points left out: their class could not be told

    def __len__(self) -> int:
        return len(self.truth)


def read_points(path: Path, image: Path) -> Points | None:
    """The points of ``path`` as pixels of ``image`` (None when the site has no point file)."""
    import geopandas as gpd
    import rasterio

    if not path.is_file():
        return None
    gdf = gpd.read_file(path)
    bad = sorted(set(gdf["class"]) - set(COASTAL.names) - {UNSURE})  # "" = drawn but not yet interpreted
    if bad:
        raise ValueError(f"{path}: class {bad[0]!r} is not one of {COASTAL.names + [UNSURE]}; interpret it again")
    with rasterio.open(image) as ds:
        if gdf.crs != ds.crs:
            gdf = gdf.to_crs(ds.crs)
        rc = np.array([ds.index(p.x, p.y) for p in gdf.geometry]).reshape(-1, 2)
        inside = (rc[:, 0] >= 0) & (rc[:, 0] < ds.height) & (rc[:, 1] >= 0) & (rc[:, 1] < ds.width)
    if not inside.all():
        raise ValueError(f"{path}: {int((~inside).sum())} points fall outside {image.name}; sample them again")
    decided = (gdf["class"] != UNSURE).to_numpy()
    # with a second phase the strata of the estimate are the cells (stratum x where the maps agree / disagree)
    stratum, size = ("cell", "cell_pixels") if "cell" in gdf.columns else ("stratum", "stratum_pixels")
    return Points(rows=rc[decided, 0], cols=rc[decided, 1],
                  truth=np.array([class_id_of(c, COASTAL) for c in gdf["class"][decided]], np.int64),
                  stratum=gdf[stratum].to_numpy()[decided], stratum_pixels=gdf[size].to_numpy(np.int64)[decided],
                  unsure=int((~decided).sum()))


def estimated_confusion(points: Points, pred: np.ndarray, take: np.ndarray | None = None) -> np.ndarray:
    """The stratified estimate of the block's confusion matrix in pixels (rows reference, columns predicted).

    ``take`` (indices into the points, repeats allowed) scores a resample; a stratum with no decided point
    contributes nothing. A prediction outside the classes (nodata) counts as no class: its points are dropped.
    """
    idx = np.arange(len(points)) if take is None else take
    predicted = pred[points.rows[idx], points.cols[idx]].astype(np.int64)
    truth, strata, sizes = points.truth[idx], points.stratum[idx], points.stratum_pixels[idx]
    cm = np.zeros((K, K), np.float64)
    for h in np.unique(strata):
        sel = strata == h
        ok = sel & (predicted < K)
        np.add.at(cm, (truth[ok], predicted[ok]), sizes[sel][0] / sel.sum())
    return cm


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in the reference or the prediction."""
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present])) if present.any() else float("nan")


def _resample(points: Points, rng: np.random.Generator) -> np.ndarray:
    """Indices of a bootstrap resample drawn within each stratum (its size kept)."""
    parts = []
    for h in np.unique(points.stratum):
        members = np.flatnonzero(points.stratum == h)
        parts.append(rng.choice(members, size=members.size, replace=True))
    return np.concatenate(parts)


def bootstrap_difference(points: Sequence[Points], a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                         reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Pooled mean IoU of ``a`` minus ``b`` over the blocks, and its 95 % paired-bootstrap interval."""
    def diff(takes) -> float:
        cm_a = sum(estimated_confusion(p, x, t) for p, x, t in zip(points, a, takes, strict=True))
        cm_b = sum(estimated_confusion(p, x, t) for p, x, t in zip(points, b, takes, strict=True))
        return mean_iou(cm_a) - mean_iou(cm_b)

    rng = np.random.default_rng(seed)
    observed = diff([None] * len(points))
    resampled = [diff([_resample(p, rng) for p in points]) for _ in range(reps)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    return observed, float(low), float(high)
