"""eoseg timeseries: shoreline positions on transects over many scenes' shorelines."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import transect_opts


@click.command("timeseries")
@click.argument("shorelines", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@transect_opts
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory for the tables, the trends GeoPackage and the plots.")
def command(shorelines: tuple[Path, ...], transects: Path, tides: Path | None, beach_slope: float | None,
            reference_level: float, out_dir: Path) -> None:
    """Chainages of SHORELINES (<stem>_shoreline.gpkg from `eoseg predict --shoreline`) on --transects.

    Writes shoreline_timeseries.csv (a row per scene, a column per transect), shoreline_timeseries_long.csv,
    shoreline_trends.gpkg (m/yr per transect) and plots/<transect>.png into --out. A scene's class raster
    (<stem>_classes.tif next to its shoreline) marks transects under nodata/cloud as empty.

    Example: eoseg timeseries results/*_shoreline.gpkg --transects transects.gpkg --out change/
    """
    from eoseg.timeseries import run_timeseries, scene_shoreline_from_file

    scenes = [scene_shoreline_from_file(p) for p in shorelines]
    paths, long = run_timeseries(scenes, transects, out_dir, tides=tides, beach_slope=beach_slope,
                                 reference_level=reference_level)
    filled = long["chainage"].notna().sum()
    click.echo(f"{len(scenes)} scene(s) × {long['transect'].nunique()} transects: {filled} chainages "
               f"({len(long) - filled} empty) → {paths['timeseries']}")
