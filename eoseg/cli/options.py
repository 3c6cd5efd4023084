"""Shared click option decorators (as rasterio's ``rio/options.py``)."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        bands = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give 1-based band indexes separated by commas, e.g. 3,2,1,4") from None
    if any(b < 1 for b in bands):
        raise click.BadParameter(f"{value!r}: band indexes start at 1")
    return bands


out_dir_opt = click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (created if absent).",
)
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
bands_opt = click.option(
    "--bands", callback=_parse_bands, default=None, metavar="I,J,K",
    help="1-based scene band indexes in the model's band-role order (overrides automatic mapping).",
)
allow_ungeo_opt = click.option(
    "--allow-ungeoreferenced", is_flag=True,
    help="Accept scenes without CRS/geotransform (outputs then carry pixel coordinates).",
)
tile_size_opt = click.option("--tile-size", type=int, default=None, help="Tile size in pixels (multiple of 32).")
overlap_opt = click.option("--overlap", type=int, default=None, help="Overlap between tiles in pixels.")
