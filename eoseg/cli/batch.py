"""eoseg batch: segment an archive of scenes on Dask (a local cluster or an existing scheduler)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from eoseg.cli.options import batch_transect_opts, model_opt, out_dir_opt, predict_settings_opts, quiet_opt


@click.command("batch")
@click.argument("inputs", nargs=-1, required=True)
@model_opt
@out_dir_opt
@click.option("--workers", type=int, default=None,
              help="Local cluster: worker processes [default: one per CPU core / thread, or one per GPU].")
@click.option("--threads-per-worker", type=int, default=1, show_default=True,
              help="Local cluster: scenes processed at once by each worker.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Use this running Dask scheduler instead of starting a local cluster.")
@click.option("--torch-threads", type=int, default=None,
              help="PyTorch threads per worker [default: the host's cores divided by its Dask threads].")
@click.option("--resume", is_flag=True,
              help="Skip scenes whose completion record matches (same input, model, settings, outputs).")
@click.option("--checksum-inputs", is_flag=True,
              help="Identify inputs by sha256 as well as size and mtime in completion records.")
@click.option("--retries", type=int, default=1, show_default=True,
              help="Retries of a task after an unexpected error (scene errors such as a corrupt file are final).")
@click.option("--summary", "summary", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per-scene class areas in km²: a .csv table, or a .gpkg with the scene footprints.")
@click.option("--max-cloud", type=float, default=None, metavar="FRACTION",
              help="Skip (and report as too_cloudy) product scenes whose quality layer flags more cloud than this "
                   "fraction (0-1) of their non-fill pixels.")
@click.option("--dashboard-address", default="127.0.0.1:8787", show_default=True,
              help="Where a local cluster serves the Dask dashboard (port 0: any free port).")
@predict_settings_opts
@batch_transect_opts
@quiet_opt
@click.pass_context
def command(ctx: click.Context, inputs: tuple[str, ...], models: tuple[str, ...], out_dir: Path,
            workers: int | None, threads_per_worker: int, scheduler: str | None, torch_threads: int | None,
            resume: bool, checksum_inputs: bool, retries: int, summary: Path | None, max_cloud: float | None,
            dashboard_address: str, quiet: bool, transects: Path | None, tides: Path | None,
            beach_slope: float | None, reference_level: float, **settings) -> None:
    """Segment every scene in INPUTS on Dask, writing what `eoseg predict` writes for each.

    INPUTS are GeoTIFFs, directories (searched recursively), quoted glob patterns, manifests (.txt: one path a
    line; .csv: a 'path' column) or STAC JSON (Item, ItemCollection, catalog). A Landsat or Sentinel-2 product
    (folder, or its band files) is one scene, named by its product id. The output tree mirrors the inputs'
    relative paths. Each scene gets a completion record (<stem>.done.json) written last; --resume skips the
    scenes whose record still matches. A scene that fails is reported and the batch goes on. Merges its outcomes
    into OUT/report.jsonl (one line per scene processed into OUT, by any run) and prints a summary; exits 0 only
    if every scene succeeded. With --transects, every scene's shoreline is traced and
    OUT/shoreline_timeseries.csv (a row per scene, a column per transect), shoreline_timeseries_long.csv,
    shoreline_trends.gpkg and plots/ are written at the end.

    \b
    Examples:
      eoseg batch archive/ --model resunet --out results/ --summary results/summary.csv
      eoseg batch "archive/2019*/*.tif" --out results/ --scheduler tcp://10.0.0.5:8786 --resume
      eoseg batch archive/ --out results/ --transects transects.gpkg --tides tides.csv --beach-slope 0.1
    """
    from eoseg.batch import run_batch
    from eoseg.predict import PredictSettings

    report = run_batch(
        list(inputs), list(models), out_dir, settings=PredictSettings(**settings), workers=workers,
        threads_per_worker=threads_per_worker, scheduler=scheduler, resume=resume, retries=retries,
        summary=summary, progress=not quiet and sys.stderr.isatty(), torch_threads=torch_threads,
        checksum_inputs=checksum_inputs, dashboard_address=dashboard_address,
        echo=None if quiet else lambda line: click.echo(line, err=True), max_cloud=max_cloud,
        transects=transects, tides=tides, beach_slope=beach_slope, reference_level=reference_level,
    )
    click.echo(report.table())
    if not report.ok:
        ctx.exit(1)
