"""``eoseg label``: dense training labels from a few strokes drawn in QGIS."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import _parse_bands, out_dir_opt, overwrite_opt, quiet_opt


def _parse_window(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        window = tuple(int(v) for v in value.split(","))
    except ValueError:
        window = ()
    if len(window) != 4:
        raise click.BadParameter(f"{value!r}: give four integers COL,ROW,WIDTH,HEIGHT (pixels)")
    return window


@click.command("label")
@click.argument("scene", type=click.Path(path_type=Path))
@click.argument("strokes", type=click.Path(path_type=Path))
@out_dir_opt
@click.option("--field", default="class", show_default=True,
              help="Class field of the strokes: ids 0-3 or names water / whitewater (surf) / sand / other.")
@click.option("--stroke-width", type=click.FloatRange(min=1), default=1.0, show_default=True,
              help="Width of line strokes in pixels (lines burn every pixel they touch; polygons fill).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.7, show_default=True,
              help="Pixels whose highest class probability is below this become 255 (ignore).")
@click.option("--max-samples", type=click.IntRange(min=10), default=20_000, show_default=True,
              help="At most this many stroke pixels per class to train on.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling and the classifier.")
@click.option("--window", callback=_parse_window, default=None, metavar="COL,ROW,WIDTH,HEIGHT",
              help="Label only this pixel window of the scene (strokes outside it unused, pixels outside it 255), "
                   "e.g. to keep an evaluation area out: --window 0,0,1932,1000.")
@click.option("--no-quicklook", is_flag=True, help="Do not write the quicklook PNG.")
@click.option("--bands", callback=_parse_bands, default=None, metavar="I,J,K",
              help="1-based scene bands to use as features (default: every spectral band; QA, thermal, pan left out).")
@overwrite_opt
@quiet_opt
def command(scene: Path, strokes: Path, out_dir: Path, field: str, stroke_width: float, threshold: float,
            max_samples: int, seed: int, window: tuple[int, ...] | None, no_quicklook: bool,
            bands: tuple[int, ...] | None, overwrite: bool, quiet: bool) -> None:
    """Densify STROKES (GeoPackage / GeoJSON lines or polygons with a class field) over SCENE into labels.

    Writes <stem>_labels.tif (class ids, 255 = ignore where unsure or nodata), its QGIS style
    <stem>_labels.qml, a quicklook <stem>_labels.png and <stem>_labels.json (pixel counts, held-out
    accuracy) into --out. Correct the strokes and run again until the labels look right.

    Example: eoseg label scene.tif strokes.gpkg --field class --out labels/
    """
    from eoseg.strokes import label_scene

    result = label_scene(scene, strokes, out_dir, field=field, stroke_width=stroke_width, threshold=threshold,
                         bands=bands, seed=seed, max_samples=max_samples, overwrite=overwrite,
                         quicklook=not no_quicklook, window=window)
    for text in result.warnings:
        click.echo(f"eoseg: warning: {strokes}: {text}", err=True)
    if not quiet:
        click.echo(result.summary())
