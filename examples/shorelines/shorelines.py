"""Worked example: a shoreline, transects and a shoreline-position table, from a shipped scene.

    python examples/shorelines/shorelines.py [--out shorelines-out] [--shared] [--png-dir examples/shorelines]

1. Klamath (the shipped Landsat 8 tile, examples/landsat/data): `predict --shoreline` with both methods
   (prob: the 0.5 contour of P(water) + P(white water); index: MNDWI at a per-scene Otsu threshold), transects
   every 100 m along the ocean-beach shoreline, and the chainage table over the two shorelines: with one
   acquisition the "time series" has one date, so what it shows is how far apart the two methods put the
   shoreline on each transect. An archive of dates goes through the same steps with
   `eoseg batch archive/ --out results/ --transects transects.gpkg` (see the README).
2. With --shared (needs ../shared/data): the Sentinel-2 Virginia scene at 10 m and the same acquisition
   aggregated to 20 m: the chainages of the two products on the same transects measure how much the traced
   shoreline moves with the pixel size alone.

Quicklooks (shoreline in red, transects in yellow with a dot at the land-side origin) go to --png-dir.
The same steps on the command line:

    eoseg predict examples/landsat/data/L8_2017-10-02_klamath_ms.tif --shoreline --min-shoreline-length 500 --out out/
    eoseg transects --shoreline out/L8_2017-10-02_klamath_ms_shoreline.gpkg --spacing 100 --length 600 \\
        --out transects.gpkg
    eoseg timeseries out/*_shoreline.gpkg --transects transects.gpkg --out change/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from eoseg.outputs.quicklook import write_shoreline_quicklook
from eoseg.outputs.shoreline import read_lines
from eoseg.outputs.stac import scene_datetime
from eoseg.predict import Predictor, PredictSettings
from eoseg.process import tune_process
from eoseg.timeseries import SceneShoreline, run_timeseries
from eoseg.transects import make_transects, write_transects

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KLAMATH = ROOT / "examples/landsat/data/L8_2017-10-02_klamath_ms.tif"
VIRGINIA = ROOT.parent / "shared/data/scenes/sentinel2_virginia"
VIRGINIA_10M = VIRGINIA / "S2A_18SVG_20160112_L1C_virginia_10m_6band.tif"
VIRGINIA_20M = VIRGINIA / "S2A_18SVG_20160112_L1C_virginia_20m_10band.tif"


def predictors(min_length: float) -> tuple[Predictor, Predictor]:
    common = dict(overwrite=True, shoreline=True, min_shoreline_length=min_length)
    return (Predictor("resunet", PredictSettings(**common)),
            Predictor("resunet", PredictSettings(**common, shoreline_method="index")))


def beach_transects(shoreline: Path, spacing: float, length: float, out: Path) -> Path:
    """Transects along the longest line of a shoreline (the ocean beach in these scenes)."""
    lines = read_lines(shoreline)
    beach = lines.loc[[lines.length_m.idxmax()]]
    return write_transects(make_transects(beach, spacing, length), out)


def compare(long, a: str, b: str) -> str:
    """Chainage differences b − a over the transects both cross, and over those both cross exactly once."""
    table = long.pivot(index="transect", columns="scene", values="chainage")
    once = long.pivot(index="transect", columns="scene", values="crossings").eq(1).all(axis=1)
    text = []
    for name, rows in (("crossed by both", table.index), ("crossed once by both", once[once].index)):
        both = table.loc[rows, [a, b]].dropna()
        diff = (both[b] - both[a]).to_numpy()
        text.append(f"{len(both)} of {len(table)} transects {name}: median {np.median(diff):+.1f} m, "
                    f"median |Δ| {np.median(np.abs(diff)):.1f} m, RMS {np.sqrt(np.mean(diff ** 2)):.1f} m")
    return f"{b} − {a}: " + "; ".join(text)


def chainages(scene: Path, results: dict, transects: Path, out: Path):
    """Both shorelines of one acquisition (``{label: SceneResult}``) measured along the transects: (paths, long)."""
    when, _ = scene_datetime(scene)
    lines = [SceneShoreline(label, when, r.outputs["shoreline"], r.outputs["classes"]) for label, r in results.items()]
    return run_timeseries(lines, transects, out, plots=False)


def shrink_png(path: Path) -> Path:
    """Rewrite a quicklook as a 256-colour PNG (a third of the bytes; these images go into the repository)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path


def around(scene: Path, transects: Path, rows: int) -> Window:
    """A full-width window ``rows`` tall centred on the transects (the shipped Klamath tile is 140 × 1007 px)."""
    import rasterio

    bounds = read_lines(transects).total_bounds
    with rasterio.open(scene) as ds:
        centre = ds.index((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)[0]
        top = int(np.clip(centre - rows // 2, 0, ds.height - rows))
        return Window(0, top, ds.width, rows)


def klamath(out: Path, png_dir: Path) -> None:
    prob, index = predictors(min_length=500)
    r_prob = prob.predict(KLAMATH, out / "prob", progress=False)
    r_index = index.predict(KLAMATH, out / "index", progress=False, stem="L8_2017-10-02_klamath_index")
    print(r_prob.summary())
    for name, r in (("prob", r_prob), ("index", r_index)):
        lines = read_lines(r.outputs["shoreline"])
        print(f"  {name}: {len(lines)} line(s), {lines.length_m.sum() / 1000:.2f} km, level {lines.level.iloc[0]:.3f}")
    transects = beach_transects(r_prob.outputs["shoreline"], 100, 600, out / "klamath_transects.gpkg")
    paths, long = chainages(KLAMATH, {"prob": r_prob, "index": r_index}, transects, out / "klamath_timeseries")
    print(f"  transects: {transects}; chainage table: {paths['timeseries']}")
    print(f"  {compare(long, 'prob', 'index')}")
    png = write_shoreline_quicklook(KLAMATH, r_prob.outputs["shoreline"], png_dir / "klamath_shoreline.png",
                                    classes_path=r_prob.outputs["classes"], transects_path=transects,
                                    scheme=prob.scheme, window=around(KLAMATH, transects, rows=240),
                                    title="Klamath, Landsat 8 2017-10-02 (30 m): shoreline (prob), transects every "
                                    "100 m", max_side=480)
    print(f"  quicklook: {shrink_png(png)}")


def virginia(out: Path, png_dir: Path) -> None:
    prob, _ = predictors(min_length=1000)
    r10 = prob.predict(VIRGINIA_10M, out / "virginia", progress=False)
    r20 = prob.predict(VIRGINIA_20M, out / "virginia", progress=False)
    print(r10.summary())
    transects = beach_transects(r10.outputs["shoreline"], 200, 400, out / "virginia_transects.gpkg")
    paths, long = chainages(VIRGINIA_10M, {"10m": r10, "20m": r20}, transects, out / "virginia_timeseries")
    print(f"  the 20 m and 10 m products of one acquisition: {compare(long, '10m', '20m')}")
    title = "Virginia, Sentinel-2 2016-01-12 (10 m): shoreline and transects"
    whole = write_shoreline_quicklook(VIRGINIA_10M, r10.outputs["shoreline"], png_dir / "virginia_shoreline.png",
                                      transects_path=transects, title=title, max_side=560)
    zoom = Window(1150, 700, 400, 400)  # the barrier beach in the middle of the scene
    png = write_shoreline_quicklook(VIRGINIA_10M, r10.outputs["shoreline"], png_dir / "virginia_shoreline_zoom.png",
                                    classes_path=r10.outputs["classes"], transects_path=transects,
                                    scheme=prob.scheme, window=zoom, title=title + " — 4 km zoom", max_side=400)
    print(f"  quicklooks: {shrink_png(whole)}, {shrink_png(png)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("shorelines-out"))
    parser.add_argument("--png-dir", type=Path, default=HERE)
    parser.add_argument("--shared", action="store_true", help="also the Virginia scenes from ../shared/data")
    args = parser.parse_args()
    tune_process([KLAMATH])
    klamath(args.out, args.png_dir)
    if args.shared:
        virginia(args.out, args.png_dir)


if __name__ == "__main__":
    main()
