"""Shared click option decorators (as rasterio's ``rio/options.py``)."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.bundle import DEFAULT_MODEL


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
def _parse_mask(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from eoseg.errors import ConfigError
    from eoseg.products import parse_mask

    try:
        classes = parse_mask(value)
    except ConfigError as exc:
        raise click.BadParameter(f"{value!r}: {exc.problem}; {exc.fix}") from None
    return ",".join(classes) or "none"


mask_opt = click.option(
    "--mask", default="clouds,shadow", show_default=True, callback=_parse_mask, metavar="CLASSES|none",
    help="Product inputs (Landsat / Sentinel-2 folders, STAC items): what of the quality layer (QA_PIXEL, SCL) "
         "becomes nodata (class 255), comma-separated from clouds, shadow, snow; fill always does. none: nothing.",
)
tile_size_opt = click.option("--tile-size", type=int, default=None, help="Tile size in pixels (multiple of 32).")
overlap_opt = click.option("--overlap", type=int, default=None, help="Overlap between tiles in pixels.")


def _compose(*decorators):
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


model_opt = click.option(
    "-m", "--model", "models", multiple=True, default=(DEFAULT_MODEL,), show_default=True,
    help="Packaged bundle name or bundle path; repeat to ensemble (probabilities are averaged).",
)

# Every option of eoseg.predict.PredictSettings, shared by `predict` and `batch`.
predict_settings_opts = _compose(
    tile_size_opt,
    overlap_opt,
    click.option("--batch-size", type=int, default=4, show_default=True, help="Tiles per forward pass."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                 show_default=True, help="Autocast precision (auto: bf16/fp16 on CUDA, bf16 on CPUs that support it)."),
    click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
                 help="Test-time augmentation: average over flips (flip) or the 8 dihedral transforms (d4)."),
    click.option("--probabilities", is_flag=True, help="Also write per-class probabilities (<stem>_probs.tif)."),
    click.option("--compile", is_flag=True,
                 help="Compile the model with torch.compile (a one-time warm-up, tens of seconds; then faster on "
                      "a GPU)."),
    bands_opt,
    click.option("--min-area", type=float, default=0.0, show_default=True,
                 help="Remove polygons smaller than this many m² (sieve)."),
    click.option("--simplify", type=float, default=0.0, show_default=True, help="Simplify polygons (CRS units)."),
    overwrite_opt,
    allow_ungeo_opt,
    click.option("--scale", type=float, default=None,
                 help="Reflectance = value × scale + offset, overriding what the file's metadata says "
                      "(models with reflectance standardization; e.g. 0.0001 for reflectance × 10000)."),
    click.option("--offset", type=float, default=None, help="Offset added after --scale (default 0)."),
    mask_opt,
    click.option("--shoreline", is_flag=True,
                 help="Also write the sub-pixel shoreline (<stem>_shoreline.gpkg): water/land boundary along sand."),
    click.option("--shoreline-method", type=click.Choice(["prob", "index"]), default="prob", show_default=True,
                 help="prob: 0.5 contour of P(water)+P(white water); index: MNDWI contour at a per-scene Otsu "
                      "threshold between sand and water (CoastSat's method)."),
    click.option("--min-shoreline-length", type=float, default=100.0, show_default=True,
                 help="Drop shoreline lines shorter than this many metres."),
)


# Transects and the shoreline time series, shared by `timeseries` and `batch`.
_transect_common = (
    click.option("--tides", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Tide table (CSV: date,level in m) for a tide correction of each chainage."),
    click.option("--beach-slope", type=float, default=None,
                 help="Beach-face slope (tan β) for --tides: chainage + (level − reference) / slope."),
    click.option("--reference-level", type=float, default=0.0, show_default=True,
                 help="Water level the tide correction refers chainages to (m, the tide table's datum)."),
)
transect_opts = _compose(
    click.option("--transects", required=True, type=click.Path(dir_okay=False, path_type=Path),
                 help="Transects (lines with an id, origin on land; GeoPackage or GeoJSON, any CRS)."),
    *_transect_common,
)
batch_transect_opts = _compose(
    click.option("--transects", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Also write shoreline_timeseries.csv etc. on these transects (implies --shoreline)."),
    *_transect_common,
)
