"""The per-scene class-area summary (.csv, or .gpkg with footprints), areas from :mod:`eoseg.outputs.areas`."""

from __future__ import annotations

import csv
from pathlib import Path

from eoseg.batch.jobs import SceneJob, TaskSpec, make_out_root
from eoseg.outputs.areas import area_block, block_pixel_areas, masked_area
from eoseg.outputs.atomic import atomic_write

SUMMARY_SUFFIXES = (".csv", ".gpkg")


STRIP_ROWS = 512  # a multiple of eoseg.outputs.areas.AREA_BLOCK


def class_areas_km2(classes_path: Path, class_ids: dict[str, int], nodata: int) -> dict[str, float | None]:
    """``{name: km²}`` of each class and of ``nodata`` in a class raster (None values without a CRS).

    Ellipsoidal areas by :mod:`eoseg.outputs.areas` (the rule polygon ``area_m2`` follows), read in strips.
    """
    import rasterio
    from rasterio.windows import Window

    ids = {**class_ids, "nodata": nodata}
    totals = dict.fromkeys(ids, 0.0)
    with rasterio.open(classes_path) as ds:
        if ds.crs is None:
            return dict.fromkeys(ids)
        block = area_block(ds.transform, ds.crs, (ds.height, ds.width))
        blocks = block_pixel_areas(ds.transform, ds.crs, (ds.height, ds.width), block)
        for top in range(0, ds.height, STRIP_ROWS):
            strip = ds.read(1, window=Window(0, top, ds.width, min(STRIP_ROWS, ds.height - top)))
            for name, value in ids.items():
                totals[name] += masked_area(strip == value, blocks, top, block)
    return {name: area / 1e6 for name, area in totals.items()}


def scene_summary(job: SceneJob, classes_path: Path, spec: TaskSpec, outcome: dict | None = None) -> dict:
    """Per-scene values for the summary: date, class areas and the WGS84 footprint. A product's own acquisition
    time (``outcome['product']``) wins over what the file says."""
    import datetime as dt

    import rasterio

    from eoseg.outputs.stac import scene_datetime, wgs84_geometry

    product = (outcome or {}).get("product") or {}
    if product.get("datetime"):
        when, source = dt.datetime.fromisoformat(product["datetime"]), "product"
    else:
        when, source = scene_datetime(job.path)
    with rasterio.open(classes_path) as ds:
        geometry, _ = wgs84_geometry(ds.crs, ds.transform, (ds.height, ds.width))
    return {
        "date": None if source == "file_mtime" else when.date().isoformat(),
        "date_source": None if source == "file_mtime" else source,
        "areas_km2": class_areas_km2(classes_path, spec.class_ids, spec.nodata),
        "footprint": geometry,
    }


SUMMARY_COLUMNS = ("scene", "date", "date_source", "sensor", "cloud_fraction", "valid_km2")


def summary_rows(results: list[dict], class_names: list[str]) -> list[dict]:
    """One row per finished scene (by date, then scene): scene, date, date_source, sensor, cloud_fraction (of a
    product's quality layer), valid_km2 (area of classified pixels), <class>_km2..., nodata_km2."""
    rows = []
    for r in results:
        if r["status"] not in ("ok", "skipped") or "areas_km2" not in r:
            continue
        areas = r["areas_km2"]
        classified = [areas.get(name) for name in class_names]
        row = {"scene": r["relpath"], "date": r.get("date"), "date_source": r.get("date_source"),
               "sensor": ((r.get("product") or {}).get("platform") or (r.get("product") or {}).get("sensor")),
               "cloud_fraction": (r.get("quality") or {}).get("cloud_fraction"),
               "valid_km2": None if any(v is None for v in classified) else sum(classified)}
        row.update({f"{name}_km2": areas.get(name) for name in [*class_names, "nodata"]})
        rows.append(row)
    return sorted(rows, key=lambda row: (row["date"] is None, row["date"] or "", row["scene"]))


def _write_csv(tmp: Path, rows: list[dict], columns: list[str]) -> None:
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else round(v, 6) if isinstance(v, float) else v)
                             for k, v in row.items()})


def _write_gpkg(tmp: Path, rows: list[dict], columns: list[str], results: list[dict]) -> None:
    import geopandas as gpd
    from shapely.geometry import shape

    footprints = {r["relpath"]: r.get("footprint") for r in results}
    geometry = [shape(footprints[row["scene"]]) if footprints.get(row["scene"]) else None for row in rows]
    frame = gpd.GeoDataFrame(rows, columns=columns, geometry=geometry, crs="EPSG:4326")
    frame.to_file(tmp, driver="GPKG", layer="scenes")


def write_summary(path: Path, results: list[dict], class_names: list[str]) -> Path:
    """Write the per-scene class areas as CSV, or as a GeoPackage of scene footprints (EPSG:4326)."""
    path = Path(path).expanduser().resolve()
    columns = [*SUMMARY_COLUMNS, *[f"{n}_km2" for n in [*class_names, "nodata"]]]
    rows = summary_rows(results, class_names)
    make_out_root(path.parent)
    with atomic_write(path) as tmp:
        if path.suffix.lower() == ".gpkg":
            _write_gpkg(Path(tmp), rows, columns, results)
        else:
            _write_csv(Path(tmp), rows, columns)
    return path
