"""eoseg predict: segment scenes into class rasters, polygons, styles and STAC items."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eoseg.cli.options import model_opt, out_dir_opt, predict_settings_opts, quiet_opt
from eoseg.errors import EosegError


@click.command("predict")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_opt
@out_dir_opt
@predict_settings_opts
@quiet_opt
@click.pass_context
def command(ctx: click.Context, scenes: tuple[Path, ...], models: tuple[str, ...], out_dir: Path, quiet: bool,
            **settings) -> None:
    """Segment SCENES into water / white-water / sand / other.

    SCENES are GeoTIFFs or VRTs, Landsat / Sentinel-2 products (a product folder, its MTL or MTD_MSIL*.xml, or
    one of its band files) or STAC Item JSON files.

    Writes <stem>_classes.tif (COG + QGIS style), <stem>_polygons.gpkg and <stem>.stac.json into --out;
    with --shoreline also <stem>_shoreline.gpkg (the sub-pixel water/land boundary along sandy beaches).

    Example: eoseg predict scene.tif --model resunet --out results/
    """
    from eoseg.predict import Predictor, PredictSettings
    from eoseg.process import tune_process

    predictor = Predictor(list(models), PredictSettings(**settings))
    tune_process(scenes, cpu=predictor.device.type == "cpu")  # a program's own process: tune it once
    failures = 0
    show = not quiet and sys.stderr.isatty()
    for scene in scenes:
        try:
            result = predictor.predict(scene, out_dir, progress=show)
        except EosegError as exc:
            if len(scenes) == 1:
                raise
            failures += 1
            click.echo(f"eoseg: error: {exc}", err=True)
            continue
        if not quiet:
            click.echo(result.summary())
    if failures:
        click.echo(f"eoseg: {failures} of {len(scenes)} scene(s) failed", err=True)
        ctx.exit(1)
