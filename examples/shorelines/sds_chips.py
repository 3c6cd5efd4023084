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
    shown = []
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
        print(f"{npz.name[:60]}: prob {len(la)} line(s) {la.length_m.sum():.0f} px, index {len(lb)} line(s) "
              f"{lb.length_m.sum():.0f} px (NDWI threshold {lb.level.iloc[0] if len(lb) else float('nan'):.3f}){gap}")
        site = next(s for s in SITES if s in npz.name)
        if site not in [s for s, *_ in shown]:
            shown.append((site, tif, la, lb, a.outputs["classes"]))
    figure(shown, args.png, prob.scheme)
    print(f"figure: {args.png}")


def figure(shown, png: Path, scheme) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from eoseg.outputs.quicklook import class_image

    fig = Figure(figsize=(2.6 * len(shown), 9), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(shown))
    for col, (site, tif, la, lb, classes) in enumerate(shown):
        with rasterio.open(tif) as ds:
            rgb = ds.read([1, 2, 3]).transpose(1, 2, 0)
        with rasterio.open(classes) as ds:
            cls = class_image(ds.read(1), scheme)
        for ax, image in zip(axes[:, col], (rgb, cls), strict=True):
            ax.imshow(image)
            for frame, colour in ((la, "#e41a1c"), (lb, "#00e5ff")):
                for g in frame.geometry:
                    xy = shapely.get_coordinates(g)  # pixel corners: the identity transform
                    ax.plot(xy[:, 0] - 0.5, xy[:, 1] - 0.5, color=colour, linewidth=0.9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(site, fontsize=9)
    fig.suptitle("SDS-benchmark chips (Landsat 8, 15 m): red = prob (resunet-rgb), cyan = index (NDWI, Otsu)",
                 fontsize=9)
    fig.tight_layout()
    with atomic_write(png) as tmp:
        fig.savefig(tmp, format="png")


if __name__ == "__main__":
    main()
