"""tile_scene(): cut a scene (and its labels) into georeferenced tile GeoTIFFs with an index.

Tiles use the same :class:`~eoseg.grid.TileGrid` as prediction, so a model trains on exactly the
windows it will later see. Each tile keeps the scene's data type, band descriptions, CRS and its own
transform; ``index.gpkg`` holds every tile's footprint, id, file names and valid-pixel fraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from eoseg.classes import NODATA_CLASS
from eoseg.errors import OutputExistsError
from eoseg.grid import Tile, TileGrid
from eoseg.labels import load_labels
from eoseg.outputs.atomic import atomic_write
from eoseg.scene import Scene, SceneReader, open_scene


@dataclass(frozen=True)
class TileIndex:
    index: Path
    tiles: int
    skipped: int
    image_dir: Path
    label_dir: Path | None


def tile_scene(
    scene: str | Path,
    out_dir: str | Path,
    *,
    size: int = 256,
    overlap: int = 32,
    labels: str | Path | None = None,
    label_field: str | None = None,
    keep_empty: bool = False,
    bands: Sequence[int] | None = None,
    overwrite: bool = False,
    allow_ungeoreferenced: bool = False,
    mask: str | None = None,
) -> TileIndex:
    """Write ``out_dir/images/<stem>_<id>.tif`` (+ ``labels/``) and ``out_dir/index.gpkg``.

    ``scene`` may be an archive product (:mod:`eoseg.products`); ``mask`` chooses what its quality layer marks
    invalid (tiles without valid pixels are skipped unless ``keep_empty``).
    """
    out_dir = Path(out_dir)
    sc = open_scene(scene, bands=bands, allow_ungeoreferenced=allow_ungeoreferenced, mask=mask)
    grid = TileGrid(sc.height, sc.width, size, overlap, sc.transform, sc.crs)
    index_path = out_dir / "index.gpkg"
    if index_path.exists() and not overwrite:
        raise OutputExistsError("output exists", path=index_path, fix="pass --overwrite or choose another --out")
    label_array = load_labels(sc, labels, label_field) if labels is not None else None
    image_dir, label_dir = out_dir / "images", (out_dir / "labels" if labels is not None else None)
    for d in (image_dir, label_dir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    rows, skipped = _write_tiles(sc, grid, image_dir, label_dir, label_array, keep_empty)
    _write_index(rows, index_path, sc)
    return TileIndex(index_path, len(rows), skipped, image_dir, label_dir)


def _write_tiles(sc: Scene, grid: TileGrid, image_dir: Path, label_dir: Path | None,
                 label_array: np.ndarray | None, keep_empty: bool) -> tuple[list[dict], int]:
    rows: list[dict] = []
    skipped = 0
    with SceneReader(sc) as reader, rasterio.open(sc.dataset) as src:
        descriptions = [src.descriptions[i - 1] for i in sc.band_indexes]
        for tile in grid:
            raw = src.read(list(sc.band_indexes), window=tile.window)
            _, valid = reader.read(tile.window)
            if label_array is not None:
                lab = label_array[tile.row_off:tile.row_off + tile.height, tile.col_off:tile.col_off + tile.width]
                valid = valid & (lab != NODATA_CLASS)
            if not valid.any() and not keep_empty:
                skipped += 1
                continue
            name = f"{sc.stem}_{tile.id}.tif"
            _write_tile(image_dir / name, raw, tile, src.profile, descriptions)
            row = {"id": tile.id, "row": tile.row, "col": tile.col, "image": f"images/{name}",
                   "valid_fraction": float(valid.mean()), "geometry": _footprint(tile)}
            if label_dir is not None and label_array is not None:
                lab_tile = lab[np.newaxis]
                _write_tile(label_dir / name, lab_tile, tile, {"nodata": NODATA_CLASS}, ["class"])
                row["label"] = f"labels/{name}"
            rows.append(row)
    return rows, skipped


def _write_tile(path: Path, data: np.ndarray, tile: Tile, profile: dict, descriptions: list) -> None:
    meta = {"driver": "GTiff", "width": tile.width, "height": tile.height, "count": data.shape[0],
            "dtype": str(data.dtype), "crs": tile.crs, "transform": tile.transform, "compress": "deflate",
            "nodata": profile.get("nodata")}
    with atomic_write(path) as tmp, rasterio.open(tmp, "w", **meta) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            if d:
                dst.set_band_description(i, d)


def _footprint(tile: Tile):
    from shapely.geometry import box

    left, bottom, right, top = tile.bounds
    return box(left, bottom, right, top)


def _write_index(rows: list[dict], path: Path, sc: Scene) -> None:
    import geopandas as gpd

    columns = ["id", "row", "col", "image", "label", "valid_fraction", "geometry"]
    gdf = gpd.GeoDataFrame(rows, columns=[c for c in columns if any(c in r for r in rows)] or columns,
                           geometry="geometry", crs=sc.crs)
    with atomic_write(path) as tmp:
        gdf.to_file(tmp, layer="tiles", driver="GPKG")
