"""eoseg tile: cut a scene (and its labels) into georeferenced tiles with an index."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import allow_ungeo_opt, bands_opt, mask_opt, out_dir_opt, overwrite_opt


@click.command("tile")
@click.argument("scene", type=click.Path(path_type=Path))
@click.option("--size", type=int, default=256, show_default=True, help="Tile size in pixels (multiple of 32).")
@click.option("--overlap", type=int, default=32, show_default=True, help="Overlap between tiles in pixels.")
@out_dir_opt
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Label raster (class ids) or label polygons (GeoPackage / GeoJSON / Shapefile).")
@click.option("--label-field", default=None, help="Class-id field of vector labels (default: class).")
@click.option("--keep-empty", is_flag=True, help="Also write tiles without valid (labelled) pixels.")
@bands_opt
@overwrite_opt
@allow_ungeo_opt
@mask_opt
def command(scene: Path, size: int, overlap: int, out_dir: Path, labels: Path | None, label_field: str | None,
            keep_empty: bool, bands, overwrite: bool, allow_ungeoreferenced: bool, mask: str) -> None:
    """Cut SCENE into overlapping GeoTIFF tiles (+ label tiles) and write DIR/index.gpkg.

    Example: eoseg tile scene.tif --size 256 --overlap 32 --out tiles/ --labels labels.gpkg --label-field class
    """
    from eoseg.tiles import tile_scene

    result = tile_scene(scene, out_dir, size=size, overlap=overlap, labels=labels, label_field=label_field,
                        keep_empty=keep_empty, bands=bands, overwrite=overwrite,
                        allow_ungeoreferenced=allow_ungeoreferenced, mask=mask)
    click.echo(f"{scene.name}: {result.tiles} tiles written ({result.skipped} empty skipped) → {result.index}")
