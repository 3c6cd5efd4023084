"""eoseg transects: shore-normal transects from a reference shoreline."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import overwrite_opt
from eoseg.errors import OutputExistsError


@click.command("transects")
@click.option("--shoreline", "shoreline", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Reference shoreline (lines; GeoPackage or GeoJSON, any CRS), e.g. a <stem>_shoreline.gpkg.")
@click.option("--spacing", type=float, default=50.0, show_default=True, help="Metres between transects.")
@click.option("--length", type=float, default=300.0, show_default=True,
              help="Transect length in metres, centred on the shoreline.")
@click.option("--flip", is_flag=True,
              help="The reference has water on its left (eoseg's shorelines have it on the right).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Transects file (.gpkg or .geojson).")
@overwrite_opt
def command(shoreline: Path, spacing: float, length: float, flip: bool, out: Path, overwrite: bool) -> None:
    """Write shore-normal transects every --spacing m along a reference shoreline, origin on the land side.

    Each transect has an id (T0001...); the chainage of a shoreline is the distance from its origin.

    Example: eoseg transects --shoreline ref_shoreline.gpkg --spacing 50 --length 300 --out transects.gpkg
    """
    from eoseg.outputs.shoreline import read_lines
    from eoseg.transects import make_transects, write_transects

    if out.exists() and not overwrite:
        raise OutputExistsError("output exists", path=out, fix="pass --overwrite or choose another --out")
    transects = make_transects(read_lines(shoreline), spacing, length, flip=flip)
    write_transects(transects, out)
    click.echo(f"{len(transects)} transects ({spacing:g} m apart, {length:g} m long) → {out}")
