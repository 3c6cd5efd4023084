"""Rebuild the multispectral training and test data from the committed strokes (run from the repository root).

    python training/make_data.py [--out data/ms] [--threshold 0.7]

For each site of training/sites.py: crop the part that may be labelled, densify the strokes into a label
raster with `eoseg label` (per-pixel random forest on bands, indices and local statistics; unsure pixels 255),
then cut the scene and its labels into training pieces (blocks of at most 320 px, the groups of the
train/validation split) and one held-out test block per site. Finally the pieces become two eoseg datasets of
256 px tiles: ``<out>/dataset`` (train / validation, for ``eoseg train --config configs/resunet.yaml``) and
``<out>/test-dataset`` (the held-out blocks, for ``eoseg evaluate``); bench/models.py scores the test blocks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sites import ROLES, SITES, Site, blocks  # noqa: E402

from eoseg.classes import COASTAL  # noqa: E402
from eoseg.classes import NODATA_CLASS as IGNORE
from eoseg.config import DatasetConfig, validate  # noqa: E402
from eoseg.dataset import make_dataset  # noqa: E402
from eoseg.strokes import label_scene  # noqa: E402

TILE = 256
REPEATED = r"^(.+?)(?:_rep\d+)?$"  # a piece and its repeats form one group of the split


def crop(src: Path, window: tuple[int, int, int, int], dst: Path, descriptions: tuple[str, ...] = ()) -> Path:
    """Copy a window of ``src`` to ``dst`` with its CRS, transform, nodata, band descriptions and tags."""
    win = Window(*window)
    with rasterio.open(src) as ds:
        profile = ds.profile.copy()
        profile.update(width=window[2], height=window[3], transform=ds.window_transform(win), driver="GTiff",
                       compress="deflate", tiled=False)
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=win))
            out.update_tags(**ds.tags())
            out.descriptions = ds.descriptions if any(ds.descriptions) or not descriptions else descriptions
            for i in range(1, ds.count + 1):
                out.update_tags(i, **ds.tags(i))
    mtl = next(src.parent.glob(f"{src.name.split('_')[0]}_MTL.txt"), None)
    if mtl is not None:  # Landsat Level-1 DN: the MTL travels with every piece
        shutil.copy(mtl, dst.parent / f"{dst.name.split('_')[0]}_MTL.txt")
    return dst


def relative(window: tuple[int, int, int, int], allowed: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return window[0] - allowed[0], window[1] - allowed[1], window[2], window[3]


def negative_labels(scene: Path, out_dir: Path) -> tuple[Path, dict]:
    """A scene with no coast (clouds, fields, forest, towns): "other" on every valid pixel, 255 at nodata.

    The inland crop's only water is a river one or two pixels wide on its east edge (about 300 mixed pixels);
    it is left as "other" rather than guessed.
    """
    with rasterio.open(scene) as ds:
        valid = ds.dataset_mask() > 0
        profile = dict(driver="GTiff", width=ds.width, height=ds.height, count=1, dtype="uint8", crs=ds.crs,
                       transform=ds.transform, nodata=IGNORE, compress="deflate")
    labels = np.where(valid, COASTAL.ids[COASTAL.names.index("other")], IGNORE).astype(np.uint8)
    path = out_dir / f"{scene.stem}_labels.tif"
    out_dir.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels, 1)
    return path, {"counts": {"other": int(valid.sum()), "nodata": int((~valid).sum())}, "held_out": {}}


def build_site(site: Site, out: Path, threshold: float) -> dict:
    """Crop the site, label each training window and the test block from their own strokes, cut the pieces.

    Each window is labelled only from the strokes inside it (``eoseg label --window``), so no training label
    comes from a stroke in the test block and the test block's reference comes from its own strokes alone.
    """
    scene = crop(site.scene, site.allowed, out / "scenes" / f"{site.stem}.tif", site.descriptions)
    windows = [("train", w) for w in site.train] + ([("test", site.test)] if site.test else [])
    report = []
    for k, (split, window) in enumerate(windows):
        rel = relative(window, site.allowed)
        if site.negative:
            labels, info = negative_labels(scene, out / "labels" / f"{site.name}_{k}")
        else:
            result = label_scene(scene, site.strokes, out / "labels" / f"{site.name}_{k}", bands=site.bands,
                                 threshold=threshold, overwrite=True, window=rel)
            labels, info = result.paths.labels, {"counts": result.counts, "held_out": result.held_out}
        report.append({"window": list(window), "split": split, **info})
        pieces = [(f"r{w[1]}c{w[0]}", w) for w in blocks(window)] if split == "train" else [("test", window)]
        for tag, piece in pieces:
            name = f"{site.stem}__{site.name}_{tag}"
            crop(scene, relative(piece, site.allowed), out / split / f"{name}.tif")
            crop(labels, relative(piece, site.allowed), out / split / "labels" / f"{name}.tif")
    return {"site": site.name, "windows": report}


def dataset_config(out: Path, split: str) -> dict:
    """An eoseg dataset config over the pieces of ``split`` (every band mapped explicitly, roles ROLES)."""
    sources = []
    for site in SITES:
        repeats = site.repeat if split == "train" else 1
        for image in sorted((out / split).glob(f"{site.stem}__{site.name}_*.tif")):
            for k in range(repeats):  # a repeated piece keeps its group (below), so it stays in one split
                labels = str(out / split / "labels" / image.name)
                name = image.stem.split("__")[1] + (f"_rep{k}" if k else "")
                sources.append({"kind": "scene", "scene": str(image), "labels": labels, "roles": list(ROLES),
                                "bands": list(site.bands), "name": name})
    fractions = {"train": 0.85, "validation": 0.15, "test": 0.0} if split == "train" else \
        {"train": 0.0, "validation": 0.0, "test": 1.0}
    return {"sources": sources, "tile_size": TILE, "overlap": TILE // 2, "ignore_value": IGNORE,
            "min_labelled_fraction": 0.05,
            "split": {**fractions, "seed": 114, "group_by": "pattern", "group_pattern": REPEATED}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/ms"))
    parser.add_argument("--threshold", type=float, default=0.7)
    args = parser.parse_args()
    report = [build_site(site, args.out, args.threshold) for site in SITES]
    (args.out / "labels.json").write_text(json.dumps(report, indent=2))
    for row in report:
        for w in row["windows"]:
            print(row["site"], w["split"], w["window"], w["counts"], (w["held_out"] or {}).get("accuracy"))
    for split, name in (("train", "dataset"), ("test", "test-dataset")):
        cfg = validate(DatasetConfig, dataset_config(args.out, split))
        manifest = make_dataset(cfg, args.out / name, overwrite=True)
        print(f"{args.out / name}: {len(manifest.tiles())} tiles of {TILE} px "
              f"({', '.join(f'{k} {len(manifest.tiles(k))}' for k in ('train', 'validation', 'test'))})")


if __name__ == "__main__":
    main()
