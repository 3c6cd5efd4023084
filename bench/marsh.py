"""Benchmark: does a model call the winter salt marsh of southern Virginia water (issue 9's complaint)?

Scene: the Sentinel-2 Virginia 10 m scene of ../shared/data. Its evaluation rows (1000 and below) are never
trained on or labelled for training; they serve evaluation only. Population: the *marsh mask* of those rows,
the dark pixels the issue is about: SWIR1 reflectance 0.015–0.1 and 0 < NIR < 0.08 (winter marsh, and the creeks,
pools and shaded shores within it). Two measures per model (``eoseg predict`` on the whole scene, the card's
defaults):

- ``mask water``: the share of the mask's pixels the model calls water. A diagnostic only: the mask holds
  creeks as well as marsh.
- ``points``: 60 pixels drawn at random from the mask (:func:`draw_points`, seed 2026), each classified by eye
  from true- and false-colour chips (17 px, and 81 px of setting) with no model's map in view
  (``training/points/virginia_marsh.gpkg``): 34 marsh ("other"), 2 water, 24 unsure (creek banks, shores,
  pools of 1–2 px). Printed: the marsh points called water, with a Wilson 95 % interval, and the decided points
  classified right.

Usage: python bench/marsh.py [--models resunet [BUNDLE ...]] [--scene PATH] [--points GPKG]
``a+b`` names an ensemble whose probabilities are averaged.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from models import predict_images  # noqa: E402

SCENE = ROOT.parent / "shared" / "data" / "scenes" / "sentinel2_virginia" / \
    "S2A_18SVG_20160112_L1C_virginia_10m_6band.tif"
POINTS = ROOT / "training" / "points" / "virginia_marsh.gpkg"
LAYER = "virginia_marsh"
EVALUATION_ROW = 1000  # rows of the 10 m scene from here down are the evaluation area
SWIR1_RANGE, NIR_MAX = (0.015, 0.1), 0.08
SEED, N_POINTS = 2026, 60
WATER, OTHER = 0, 3
CLASS_IDS = {"water": WATER, "other": OTHER}


def marsh_mask(scene: Path = SCENE) -> np.ndarray:
    """The marsh mask of the scene's evaluation rows (see the module docstring); the scene is TOA × 10000."""
    with rasterio.open(scene) as ds:
        nir, swir1 = (ds.read(band).astype(np.float64) / 10000 for band in (4, 5))
    mask = (swir1 > SWIR1_RANGE[0]) & (swir1 < SWIR1_RANGE[1]) & (nir > 0) & (nir < NIR_MAX)
    mask[:EVALUATION_ROW] = False
    return mask


def draw_points(mask: np.ndarray, n: int = N_POINTS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pixels of ``mask`` drawn at random without replacement, sorted by row then column."""
    rows, cols = np.nonzero(mask)
    pick = np.random.default_rng(seed).choice(len(rows), n, replace=False)
    order = np.lexsort((cols[pick], rows[pick]))
    return rows[pick][order], cols[pick][order]


@dataclass(frozen=True)
class MarshPoints:
    rows: np.ndarray
    cols: np.ndarray
    classes: np.ndarray  # "water", "other" or "unsure"


def read_points(path: Path = POINTS) -> MarshPoints:
    import geopandas as gpd

    table = gpd.read_file(path, layer=LAYER)
    return MarshPoints(table["row"].to_numpy(int), table["col"].to_numpy(int), table["class"].to_numpy(str))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def score(classes: np.ndarray, mask: np.ndarray, points: MarshPoints) -> dict:
    """The model's class map ``classes`` on the mask and on the decided points."""
    said = classes[points.rows, points.cols]
    decided = points.classes != "unsure"
    truth = np.array([CLASS_IDS.get(c, -1) for c in points.classes])
    marsh = points.classes == "other"
    marsh_water = int((said[marsh] == WATER).sum())
    return {"mask_water": float((classes[mask] == WATER).mean()), "marsh_points": int(marsh.sum()),
            "marsh_points_water": marsh_water, "marsh_points_water_ci": wilson(marsh_water, int(marsh.sum())),
            "decided": int(decided.sum()), "decided_right": int((said[decided] == truth[decided]).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resunet"])
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--points", type=Path, default=POINTS)
    args = parser.parse_args()
    mask, points = marsh_mask(args.scene), read_points(args.points)
    print(f"marsh mask: {int(mask.sum())} px; points: {len(points.rows)} ({int((points.classes == 'other').sum())} "
          f"marsh, {int((points.classes == 'water').sum())} water, {int((points.classes == 'unsure').sum())} unsure)")
    print(f"{'model':<28} {'mask water':>10} {'marsh points called water [95 %]':>34} {'decided right':>14}")
    for model in args.models:
        s = score(predict_images(model, [args.scene])[0], mask, points)
        low, high = s["marsh_points_water_ci"]
        print(f"{model:<28} {100 * s['mask_water']:>9.1f}% "
              f"{s['marsh_points_water']:>10d}/{s['marsh_points']} = {s['marsh_points_water'] / s['marsh_points']:.2f} "
              f"[{low:.2f}, {high:.2f}] {s['decided_right']:>8d}/{s['decided']}")


if __name__ == "__main__":
    main()
