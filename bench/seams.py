"""Benchmark: tiled vs one-pass agreement of a model's class map (does the class depend on the tile grid?).

The scene is predicted twice with the same bundle, settings and standardization: once with the card's default
tile size and overlap (what ``eoseg predict`` does), once as a single tile that covers the whole scene (the
scene is reflect-padded to a multiple of the model's input size). The share of valid pixels with the same
class is printed, with the agreement per class of the one-pass map.

Usage: python bench/seams.py [--model resunet] [--scene ../shared/data/scenes/sentinel2_virginia/...20m...tif]
       [--tile-size N --overlap N] [--write-card]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
VIRGINIA_20M = ROOT.parent / "shared/data/scenes/sentinel2_virginia/S2A_18SVG_20160112_L1C_virginia_20m_10band.tif"


def classes(model: str, scene: Path, tile_size: int | None, overlap: int | None) -> tuple[np.ndarray, int, int]:
    from eoseg.predict import Predictor, PredictSettings

    predictor = Predictor(model, PredictSettings(tile_size=tile_size, overlap=overlap, precision="fp32",
                                                 overwrite=True))
    with tempfile.TemporaryDirectory() as tmp:
        result = predictor.predict(scene, tmp, progress=False)
        with rasterio.open(result.outputs["classes"]) as ds:
            return ds.read(1), predictor.tile_size, predictor.overlap


def one_pass_size(scene: Path, multiple: int = 32) -> int:
    with rasterio.open(scene) as ds:
        side = max(ds.width, ds.height)
    return -(-side // multiple) * multiple


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resunet")
    parser.add_argument("--scene", type=Path, default=VIRGINIA_20M)
    parser.add_argument("--tile-size", type=int)
    parser.add_argument("--overlap", type=int)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args(argv)
    if not args.scene.exists():
        sys.exit(f"{args.scene}: benchmark scene not found (../shared/data)")
    tiled, size, overlap = classes(args.model, args.scene, args.tile_size, args.overlap)
    whole, _, _ = classes(args.model, args.scene, one_pass_size(args.scene), 0)
    valid = (tiled != 255) & (whole != 255)
    agreement = float((tiled[valid] == whole[valid]).mean())
    print(f"{args.model} on {args.scene.name}: tiles {size}/{overlap} vs one pass: agreement {agreement:.4f} "
          f"over {int(valid.sum())} px")
    for k in range(4):
        sel = valid & (whole == k)
        if sel.any():
            print(f"  class {k}: {int(sel.sum())} px, agreement {(tiled[sel] == k).mean():.4f}")
    if args.write_card:
        from eoseg.bundle import CARD_FILE, resolve_bundle

        path = resolve_bundle(args.model) / CARD_FILE
        card = json.loads(path.read_text())
        card.setdefault("metrics", {})["tiled_vs_one_pass"] = {
            "scene": args.scene.name, "tile_size": size, "overlap": overlap, "agreement": round(agreement, 5),
            "benchmark": "bench/seams.py"}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(card, indent=2) + "\n")
        tmp.replace(path)
    return agreement


if __name__ == "__main__":
    main()
