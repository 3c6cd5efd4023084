"""Draw the check points of the held-out test blocks and the chip sheets they are interpreted from.

    python training/sample_points.py [--data data/ms] [--sheets bench-out/points] [--unsure --context 7]

An accuracy assessment in the manner of Olofsson et al. (2014, "Good practices for estimating area and assessing
accuracy of land change", Remote Sensing of Environment 148): a stratified random sample of pixels in each
coastal test block, each pixel's class then decided by looking at it — true colour and SWIR1/NIR/red false
colour, 41 px of context around it — without any model's map in view. The strata are the classes of the block's
densified reference (water, white water, sand, other) and its "unsure" pixels (255 but valid): the pixels the
densifier could not decide, which the ``dense`` reference leaves unscored. Each stratum's pixel count is kept
with the point, so ``bench/models.py`` weighs each point by the share of the block it stands for.

Writes ``training/points/<site>.gpkg`` (point geometry at the pixel centre; ``point``, ``stratum``,
``stratum_pixels``, ``row``, ``col`` (in the test block) and an empty ``class`` to be filled in: a class name, or
``unsure`` where the pixel cannot be told) unless the file already exists: its ``class`` column holds
interpretation work, so the sheets are then drawn from its points. And a PNG sheet of 20 chips per page under
``--sheets``, the points in random order so that the stratum is not in view.

A second phase (``--disagree MAPS [MAPS ...]``, each a folder of class maps ``<site>.tif`` of the test blocks as
``bench/models.py --out`` writes them under ``maps/``) adds ``--per-cell``-sized draws where the given maps
disagree: the pixels that decide which of two maps is better, and that a sample stratified by the reference's
classes reaches only by chance. Each stratum is split into cells, the pixels where all the maps agree and those
where any two differ, and every point, old and new, gets its cell and the cell's pixel count (``cell``,
``cell_pixels``; ``phase`` 1 or 2). A first-phase point is a uniform draw from its stratum, so from its cell too,
and the new points are uniform draws from their cell, so the cells are the strata of the estimate
(post-stratification). The maps only choose where to look: the points are still classified by eye with no map
in view.

How the committed points were interpreted: every point on the sheets with 15 px of context (a first pass, 78 of
360 points "unsure"), then the unsure ones again with ``--unsure --context 7``, where the framed pixel itself
is larger (30 stayed unsure: mixed pixels on a shoreline or a creek bank, piers, boats). The 184 second-phase
points (``--disagree`` with the maps of the packaged ``resunet`` and of the per-pixel forest trained on two
versions of the labels) were classified from larger chips, 8 px of context and an 81-px view of the setting,
the 47 unsure ones again at 4 px (19 stayed unsure). White water is foam
that is bright in true colour and cyan in the false colour; sand includes the wet beach face; a town, a pier
or a marsh is "other"; a creek is water.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sites import Site  # noqa: E402

from eoseg.classes import COASTAL, NODATA_CLASS  # noqa: E402

POINTS = Path(__file__).resolve().parent / "points"
PER_CLASS = 20  # points per reference class stratum
PER_UNSURE = 40  # points in the stratum the densifier left unsure
PER_DISAGREE = 60  # second-phase points per block where the given maps disagree (--per-block)
MIN_PER_CELL = 3  # ... and at least this many in each disagreement cell that has the pixels
UNSURE = "unsure"
CONTEXT = 15  # px either side of the point in a chip (--context)
SEED = 2026


def strata(labels: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """Flat pixel indices of each stratum: the reference classes and the valid-but-unsure pixels."""
    out = {c.name: np.flatnonzero((labels == c.id) & valid) for c in COASTAL.classes}
    out[UNSURE] = np.flatnonzero((labels == NODATA_CLASS) & valid)
    return out


def sample(labels: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """Stratified random pixels (all of a stratum smaller than its quota), with their stratum's size."""
    rows = []
    for name, pixels in strata(labels, valid).items():
        quota = PER_UNSURE if name == UNSURE else PER_CLASS
        picks = np.sort(rng.choice(pixels, size=min(quota, pixels.size), replace=False))
        for flat in picks:
            r, c = np.unravel_index(flat, labels.shape)
            rows.append({"stratum": name, "stratum_pixels": int(pixels.size), "row": int(r), "col": int(c)})
    order = rng.permutation(len(rows))  # interpreted in random order, so the stratum is not in view
    return [{"point": k, **rows[i]} for k, i in enumerate(order)]


def disagreement(maps: list[np.ndarray], valid: np.ndarray) -> np.ndarray:
    """Valid pixels where any two of ``maps`` give different classes."""
    stack = np.stack(maps)
    return valid & (stack != stack[0]).any(axis=0)


def cells(labels: np.ndarray, valid: np.ndarray, disagree: np.ndarray) -> dict[str, np.ndarray]:
    """Flat pixel indices of each cell: each stratum split into the pixels where the maps agree and disagree."""
    flat = disagree.ravel()
    out = {}
    for name, pixels in strata(labels, valid).items():
        for kind, keep in (("agree", ~flat[pixels]), ("disagree", flat[pixels])):
            if keep.any():
                out[f"{name}/{kind}"] = pixels[keep]
    return out


def second_phase(rows: list[dict], labels: np.ndarray, valid: np.ndarray, disagree: np.ndarray,
                 rng: np.random.Generator, per_block: int = PER_DISAGREE) -> list[dict]:
    """``rows`` and new points drawn where the maps disagree, every point with its cell and the cell's size.

    The block's ``per_block`` new points are shared among the disagreement cells by their size, at least
    ``MIN_PER_CELL`` each (all of a smaller cell); no pixel is drawn twice.
    """
    cell_pixels = cells(labels, valid, disagree)
    stratum_size = {name: int(pixels.size) for name, pixels in strata(labels, valid).items()}
    taken = [r["row"] * labels.shape[1] + r["col"] for r in rows]
    pool = {k: np.setdiff1d(v, taken) for k, v in cell_pixels.items() if k.endswith("/disagree")}
    total = sum(v.size for v in pool.values())
    new = []
    for name, pixels in pool.items():
        quota = min(pixels.size, max(MIN_PER_CELL, round(per_block * pixels.size / max(total, 1))))
        stratum = name.split("/")[0]
        for flat in np.sort(rng.choice(pixels, size=quota, replace=False)):
            r, c = np.unravel_index(flat, labels.shape)
            new.append({"stratum": stratum, "stratum_pixels": stratum_size[stratum], "row": int(r), "col": int(c),
                        "class": ""})
    first = max((r["point"] for r in rows), default=-1) + 1
    new = [{"point": first + k, **new[i]} for k, i in enumerate(rng.permutation(len(new)))]

    def with_cell(row: dict, phase: int) -> dict:
        cell = f"{row['stratum']}/{'disagree' if disagree[row['row'], row['col']] else 'agree'}"
        return {**row, "phase": phase, "cell": cell, "cell_pixels": int(cell_pixels[cell].size)}

    return [with_cell(r, 1) for r in rows] + [with_cell(r, 2) for r in new]


def read_maps(folders: list[Path], site: str) -> list[np.ndarray]:
    """The class maps of ``site``'s test block in each of ``folders`` (``<folder>/<site>.tif``)."""
    maps = []
    for folder in folders:
        path = folder / f"{site}.tif"
        if not path.is_file():
            sys.exit(f"{path}: no class map of the {site} test block; write the maps with bench/models.py --out")
        with rasterio.open(path) as ds:
            maps.append(ds.read(1))
    return maps


def write_points(site: Site, image: Path, rows: list[dict], path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import Point

    with rasterio.open(image) as ds:
        xy = [ds.xy(r["row"], r["col"]) for r in rows]
        crs = ds.crs
    gdf = gpd.GeoDataFrame([{**r, "class": r.get("class", "")} for r in rows],
                           geometry=[Point(x, y) for x, y in xy], crs=crs)
    path.parent.mkdir(parents=True, exist_ok=True)
    gdf.to_file(path, driver="GPKG", layer=site.name)


def _rgb(refl: np.ndarray, bands: tuple[int, int, int], gain: float) -> np.ndarray:
    return np.clip(refl[list(bands)].transpose(1, 2, 0) * gain, 0, 1) ** 0.8


def chip(img: np.ndarray, row: int, col: int, context: int = CONTEXT) -> np.ndarray:
    """The ``2 * context + 1`` px around (row, col), black beyond the block."""
    size = 2 * context + 1
    out = np.zeros((size, size, 3), np.float32)
    r0, c0 = row - context, col - context
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + size, img.shape[0]), min(c0 + size, img.shape[1])
    out[rs - r0:re - r0, cs - c0:ce - c0] = img[rs:re, cs:ce]
    return out


def sheets(site: Site, refl: np.ndarray, rows: list[dict], out: Path, context: int = CONTEXT,
           per_page: int = 20) -> list[Path]:
    """Pages of chips: true colour and false colour side by side, the point's pixel framed in magenta."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    tc, fc = _rgb(refl, (2, 1, 0), 3.5), _rgb(refl, (4, 3, 2), 2.5)
    paths = []
    for page in range(0, len(rows), per_page):
        fig, axs = plt.subplots(5, 8, figsize=(22, 14.5))
        for ax in axs.flat:
            ax.axis("off")
        for k, r in enumerate(rows[page:page + per_page]):
            for j, img in enumerate((tc, fc)):
                ax = axs.flat[2 * k + j]
                ax.imshow(chip(img, r["row"], r["col"], context), interpolation="nearest")
                ax.add_patch(Rectangle((context - 1.5, context - 1.5), 3, 3, fill=False, ec="magenta", lw=1.2))
                ax.set_title(f"{r['point']}" if j == 0 else "", fontsize=11, loc="left")
        fig.suptitle(f"{site.name}: sheet {page // per_page} (true colour | "
                     "SWIR1, NIR, red); the pixel is inside the magenta frame", fontsize=11)
        fig.tight_layout()
        path = out / f"{site.name}_{page // per_page:02d}.png"
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=72)
        plt.close(fig)
        paths.append(path)
    return paths


def read_rows(path: Path) -> list[dict]:
    """The points of an existing point file, as ``sample`` returns them, with their ``class``."""
    import geopandas as gpd

    gdf = gpd.read_file(path)
    text = {"stratum", "class", "cell"}
    return [{k: (v if k in text else int(v)) for k, v in row.items() if k != "geometry"}
            for row in gdf.to_dict("records")]


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from models import load_blocks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/ms"))
    parser.add_argument("--sheets", type=Path, default=Path("bench-out/points"))
    parser.add_argument("--context", type=int, default=CONTEXT, help="px of context either side of a point")
    parser.add_argument("--unsure", action="store_true", help="only the points interpreted as 'unsure'")
    parser.add_argument("--disagree", type=Path, nargs="+", metavar="MAPS",
                        help="second phase: folders of class maps <site>.tif; draw more points where they disagree")
    parser.add_argument("--per-block", type=int, default=PER_DISAGREE, help="second-phase points per block")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    for block in load_blocks(args.data, "test", strokes=False, points=False):
        if block.site.negative:
            continue
        rows = sample(block.labels, block.valid, rng)
        path = POINTS / f"{block.site.name}.gpkg"
        if path.exists():
            print(f"{path}: exists, kept (it holds the interpreted classes)")
            rows = read_rows(path)
        else:
            write_points(block.site, block.image, rows, path)
        if args.disagree:
            if any("cell" in r for r in rows):
                sys.exit(f"{path}: already has a second phase; remove its phase-2 points to draw them again")
            maps = read_maps(args.disagree, block.site.name)
            if any(m.shape != block.labels.shape for m in maps):
                sys.exit(f"{block.site.name}: a class map is not the size of the test block {block.labels.shape}; "
                         f"write the maps with bench/models.py --data {args.data} --out")
            disagree = disagreement(maps, block.valid)
            rows = second_phase(rows, block.labels, block.valid, disagree, np.random.default_rng(SEED + 1),
                                args.per_block)
            write_points(block.site, block.image, rows, path)
            rows = [r for r in rows if r["phase"] == 2]
            print(f"{path}: {len(rows)} second-phase points where the maps disagree ({int(disagree.sum())} px)")
        if args.unsure:
            rows = [r for r in rows if r.get("class") == UNSURE]
        for sheet in sheets(block.site, block.reflectance, rows, args.sheets, args.context):
            print(sheet)


if __name__ == "__main__":
    main()
