"""Output writers: class / probability COGs, class polygons, QGIS styles and a STAC item.

Typical use by the predict loop::

    plan = plan_outputs(out_dir, stem, probabilities=True, overwrite=False)   # before any work
    with RasterSink(plan.classes, w, h, 1, "uint8", crs, transform, 255, "classes", scheme) as sink:
        for array, window in finished_rows:
            sink.write(array, window)
    write_qml(plan.qml, raster_qml(scheme))
    write_polygons(polygonize_file(plan.classes, scheme, min_area_m2=...), plan.polygons, scheme)
    write_stac_item(plan.stac, scene_path=scene, item_id=stem, outputs=plan.assets(), crs=crs,
                    transform=transform, shape=(h, w), scheme=scheme)

Every file is written under a temporary name and renamed into place only when complete.
"""

from eoseg.outputs.atomic import (
    OutputPaths,
    atomic_write,
    cleanup_temporaries,
    output_files,
    plan_outputs,
    temporary_path,
)
from eoseg.outputs.cog import RasterSink, category_names, validate_cog
from eoseg.outputs.qgis import raster_qml, vector_qml, write_qml
from eoseg.outputs.stac import build_stac_item, scene_datetime, write_stac_item
from eoseg.outputs.vectors import polygonize, polygonize_file, read_styles, write_polygons

__all__ = [
    "OutputPaths",
    "RasterSink",
    "atomic_write",
    "build_stac_item",
    "category_names",
    "cleanup_temporaries",
    "output_files",
    "plan_outputs",
    "polygonize",
    "polygonize_file",
    "raster_qml",
    "read_styles",
    "scene_datetime",
    "temporary_path",
    "validate_cog",
    "vector_qml",
    "write_polygons",
    "write_qml",
    "write_stac_item",
]
