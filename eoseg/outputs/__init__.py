"""Output writers: class / probability COGs, class polygons, QGIS styles and a STAC item.

Typical use by the predict loop::

    plan = plan_outputs(out_dir, stem, probabilities=True, overwrite=False)   # before any work
    with RasterSink(plan.classes, w, h, 1, "uint8", crs, transform, 255, "classes", scheme) as sink:
        with PolygonWriter(plan.polygons, (h, w), transform, crs, scheme, min_area_m2=...) as polygons:
            for array, window in finished_rows:
                sink.write(array, window)
                polygons.write_rows(array)
    write_qml(plan.qml, raster_qml(scheme))
    write_stac_item(plan.stac, scene_path=scene, item_id=stem, outputs=plan.assets(), crs=crs,
                    transform=transform, shape=(h, w), scheme=scheme)

Every file is written under a temporary name and renamed into place only when complete;
:func:`all_or_nothing` removes a scene's finished files again when a later one fails.
"""

from eoseg.outputs.atomic import (
    OutputPaths,
    all_or_nothing,
    atomic_write,
    cleanup_temporaries,
    output_files,
    plan_outputs,
    temporary_path,
)
from eoseg.outputs.cog import RasterSink, category_names, validate_cog
from eoseg.outputs.qgis import raster_qml, vector_qml, write_qml
from eoseg.outputs.stac import build_stac_item, scene_datetime, write_stac_item
from eoseg.outputs.vectors import PolygonWriter, polygonize, polygonize_file, read_styles, write_polygons

__all__ = [
    "OutputPaths",
    "PolygonWriter",
    "RasterSink",
    "all_or_nothing",
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
