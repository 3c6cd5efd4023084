"""Label rasters and label polygons, brought onto a scene's pixel grid (unlabelled = 255)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.warp import reproject

from eoseg.classes import NODATA_CLASS
from eoseg.errors import DatasetError
from eoseg.scene import Scene

VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml"}


def is_vector(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def load_labels(scene: Scene, labels: str | Path, field: str | None = None) -> np.ndarray:
    """(H, W) uint8 class ids on the scene grid; 255 where unlabelled."""
    labels = Path(labels)
    if not labels.exists():
        raise DatasetError("label file does not exist", path=labels, fix="check the --labels path")
    if is_vector(labels):
        return rasterize_labels(scene, labels, field)
    return _raster_labels(scene, labels)


def _raster_labels(scene: Scene, path: Path) -> np.ndarray:
    try:
        with rasterio.open(path) as ds:
            same_grid = (ds.width, ds.height) == (scene.width, scene.height) and (
                not scene.georeferenced or (ds.transform.almost_equals(scene.transform) and ds.crs == scene.crs))
            if same_grid:
                data = ds.read(1, masked=True)
                return _to_uint8(data.filled(NODATA_CLASS), path)
            if not scene.georeferenced or ds.crs is None:
                raise DatasetError(
                    f"label raster is {ds.width}×{ds.height} px but the scene is {scene.width}×{scene.height} and "
                    "one of them has no georeferencing to align them", path=path,
                    fix="give labels on the scene's pixel grid")
            out = np.full((scene.height, scene.width), NODATA_CLASS, np.uint8)
            reproject(rasterio.band(ds, 1), out, dst_transform=scene.transform, dst_crs=scene.crs,
                      dst_nodata=NODATA_CLASS, resampling=Resampling.nearest)
            return out
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(f"cannot read label raster ({exc})", path=path, fix="pass a GeoTIFF of class ids") from exc


def _to_uint8(data: np.ndarray, path: Path) -> np.ndarray:
    values = np.unique(data)
    if values.size and (values.min() < 0 or values.max() > 255 or not np.allclose(values, np.round(values))):
        raise DatasetError("label values must be whole numbers between 0 and 255", path=path,
                           fix="store class ids as integers (255 = unlabelled)")
    return data.astype(np.uint8)


def rasterize_labels(scene: Scene, path: Path, field: str | None) -> np.ndarray:
    import geopandas as gpd

    gdf = gpd.read_file(path)
    fields = ", ".join(c for c in gdf.columns if c != "geometry")
    if field is None:
        candidates = [c for c in ("class", "class_id", "label", "classvalue") if c in gdf.columns]
        if not candidates:
            raise DatasetError("no class field given and none of class/class_id/label found", path=path,
                               fix=f"pass --label-field (one of: {fields})")
        field = candidates[0]
    if field not in gdf.columns:
        raise DatasetError(f"no field {field!r} in the label layer", path=path,
                           fix=f"use one of: {fields}")
    if scene.georeferenced and gdf.crs is not None and gdf.crs != scene.crs:
        gdf = gdf.to_crs(scene.crs)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    values = gdf[field].to_numpy()
    if values.size and (not np.issubdtype(values.dtype, np.number) or values.min() < 0 or values.max() >= NODATA_CLASS):
        raise DatasetError(f"field {field!r} must hold class ids from 0 to 254", path=path,
                           fix="remap class names to integer ids first")
    shapes = ((geom, int(v)) for geom, v in zip(gdf.geometry, values, strict=True))
    return rasterize(shapes, out_shape=(scene.height, scene.width), transform=scene.transform,
                     fill=NODATA_CLASS, dtype="uint8")
