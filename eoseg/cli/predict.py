"""eoseg predict: segment scenes into class rasters, polygons, styles and STAC items."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eoseg.cli.options import (
    allow_ungeo_opt,
    bands_opt,
    out_dir_opt,
    overlap_opt,
    overwrite_opt,
    quiet_opt,
    tile_size_opt,
)
from eoseg.errors import EosegError


@click.command("predict")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-m", "--model", "models", multiple=True, default=("resunet",), show_default=True,
              help="Packaged bundle name or bundle path; repeat to ensemble (probabilities are averaged).")
@out_dir_opt
@tile_size_opt
@overlap_opt
@click.option("--batch-size", type=int, default=4, show_default=True, help="Tiles per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Autocast precision (auto: bf16/fp16 on CUDA, bf16 on CPUs that support it).")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
              help="Test-time augmentation: average over flips (flip) or the 8 dihedral transforms (d4).")
@click.option("--probabilities", is_flag=True, help="Also write per-class probabilities (<stem>_probs.tif).")
@bands_opt
@click.option("--min-area", type=float, default=0.0, show_default=True,
              help="Remove polygons smaller than this many m² (sieve).")
@click.option("--simplify", type=float, default=0.0, show_default=True, help="Simplify polygons (CRS units).")
@overwrite_opt
@allow_ungeo_opt
@quiet_opt
@click.pass_context
def command(ctx: click.Context, scenes: tuple[Path, ...], models: tuple[str, ...], out_dir: Path, quiet: bool,
            **settings) -> None:
    """Segment SCENES (GeoTIFFs) into water / white-water / sand / other.

    Writes <stem>_classes.tif (COG + QGIS style), <stem>_polygons.gpkg and <stem>.stac.json into --out.

    Example: eoseg predict scene.tif --model resunet --out results/
    """
    from eoseg.predict import Predictor, PredictSettings

    predictor = Predictor(list(models), PredictSettings(**settings))
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
