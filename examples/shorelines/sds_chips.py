"""Shorelines on the SDS-benchmark chips (four sandy beaches; Landsat 8, 15 m; not georeferenced; R, G, B, NIR).

    python examples/shorelines/sds_chips.py [--out sds-out] [--png examples/shorelines/sds_chips.png]

Each chip (../shared/data/scenes/sds_benchmark_5band_chips/*.npz, uint8 display-stretched) is written as a
GeoTIFF without a CRS, segmented with the packaged RGB model (``resunet-rgb``: the chips have no SWIR), and its
shoreline traced twice: ``prob`` (0.5 contour of P(water) + P(white water)) and ``index`` (NDWI with NIR at a
per-chip Otsu threshold). Lengths are in pixels here (no CRS). The PNG shows the first chip of each site.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
import shapely

from eoseg.outputs.atomic import atomic_write
from eoseg.outputs.shoreline import read_lines
from eoseg.predict import Predictor, PredictSettings

HERE = Path(__file__).resolve().parent
CHIPS = HERE.parents[2] / "shared/data/scenes/sds_benchmark_5band_chips"
SITES = ("DUCK", "NARRABEEN", "TORREYPINES", "TRUCVERT")


def chip_tif(npz: Path, out: Path) -> Path:
    """R, G, B, NIR of a chip as a GeoTIFF with band names (band 5 repeats NIR and is left out)."""
    data = np.load(npz)["arr_0"][..., :4].transpose(2, 0, 1)
    path = out / f"{npz.stem}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=4,
                       dtype="uint8") as ds:
        ds.write(data)
        ds.descriptions = ("red", "green", "blue", "nir")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sds-out"))
    parser.add_argument("--png", type=Path, default=HERE / "sds_chips.png")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = dict(overwrite=True, shoreline=True, min_shoreline_length=20, allow_ungeoreferenced=True)
    prob = Predictor("resunet-rgb", PredictSettings(**common))
    index = Predictor("resunet-rgb", PredictSettings(**common, shoreline_method="index"))
    shown: dict[str, list] = {site: [] for site in SITES}
    for npz in sorted(CHIPS.glob("*.npz")):
        tif = chip_tif(npz, args.out)
        a = prob.predict(tif, args.out / "prob", progress=False)
        b = index.predict(tif, args.out / "index", progress=False)
        la, lb = read_lines(a.outputs["shoreline"]), read_lines(b.outputs["shoreline"])
        gap = ""
        if len(la) and len(lb):
            pts = shapely.points(shapely.get_coordinates(lb.geometry.values))
            distance = shapely.distance(shapely.union_all(la.geometry.values), pts)
            gap = f"; median distance index → prob {np.median(distance):.1f} px"
        level = f"{lb.level.iloc[0]:.3f}" if len(lb) else "-"
        print(f"{npz.name[:48]}: prob {len(la)} line(s) {la.length_m.sum():.0f} px, index {len(lb)} line(s) "
              f"{lb.length_m.sum():.0f} px (NDWI threshold {level}){gap}")
        site = next(s for s in SITES if s in npz.name)
        shown[site].append((npz.name[:10], tif, la, lb))
    figure(shown, args.png)
    from shorelines import shrink_png  # the worked example beside this script

    print(f"figure: {shrink_png(args.png)}")


def figure(shown: dict[str, list], png: Path) -> None:
    """Every chip in true colour with both shorelines: a row per site, a column per date."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(len(v) for v in shown.values())
    fig = Figure(figsize=(1.25 * cols, 3.1 * len(shown)), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(shown), cols, squeeze=False)
    for row, (site, chips) in enumerate(shown.items()):
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(chips):
                ax.axis("off")
                continue
            date, tif, la, lb = chips[col]
            with rasterio.open(tif) as ds:
                ax.imshow(ds.read([1, 2, 3]).transpose(1, 2, 0))
            for frame, colour in ((la, "#e41a1c"), (lb, "#00e5ff")):
                for g in frame.geometry:
                    xy = shapely.get_coordinates(g)  # pixel-centre coordinates + 0.5 (the identity transform)
                    ax.plot(xy[:, 0] - 0.5, xy[:, 1] - 0.5, color=colour, linewidth=0.8)
            ax.set_title(f"{site[:5]} {date}", fontsize=6)
    fig.suptitle("SDS-benchmark chips, Landsat 8 15 m: red = prob (resunet-rgb), cyan = index (NDWI, Otsu)",
                 fontsize=8)
    fig.tight_layout()
    with atomic_write(png) as tmp:
        fig.savefig(tmp, format="png")


if __name__ == "__main__":
    main()
