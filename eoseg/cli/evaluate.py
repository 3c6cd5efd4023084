"""``eoseg evaluate``: a bundle over a dataset split, or a class raster against a label raster."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import overwrite_opt, quiet_opt
from eoseg.errors import ConfigError


@click.command("evaluate")
@click.option("--model", default=None, help="Model bundle (directory or packaged name).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="eoseg dataset directory (with manifest.json).")
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="test", show_default=True)
@click.option("--pred", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Predicted class raster (e.g. X_classes.tif).")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Label raster on the same grid as --pred.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write metrics.json, confusion_matrix.csv/.png and per_sample.csv here.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
@overwrite_opt
@quiet_opt
def command(model, data, split, pred, labels, out_dir, batch_size, device, overwrite, quiet) -> None:
    """Overall accuracy, mean / per-class IoU, F1, precision, recall, Dice, fwIoU, MCC, KL divergence.

    Over a dataset split each labelled pixel counts once, however many overlapping tiles hold it. Training
    scores its validation split tile by tile (an overlapped pixel counts in each tile), so a card's
    `validation` figures differ from `--split validation` here.
    """
    from eoseg.evaluate import evaluate_bundle, evaluate_rasters

    if model and data and not (pred or labels):
        report = evaluate_bundle(model, data, split, out_dir, batch_size=batch_size, device=device,
                                 overwrite=overwrite, progress=not quiet)
    elif pred and labels and not (model or data):
        report = evaluate_rasters(pred, labels, out_dir, overwrite=overwrite)
    else:
        raise ConfigError("give either --model and --data, or --pred and --labels", path="eoseg evaluate",
                          fix="e.g. eoseg evaluate --model runs/x/bundle --data data/ocean-beach --split test")
    m = report.metrics
    click.echo(f"pixels {m['pixels']:,}  accuracy {m['overall_accuracy']:.4f}  mean IoU {m['mean_iou']:.4f}  "
               f"Dice {m['dice']:.4f}  fwIoU {m['frequency_weighted_iou']:.4f}  MCC {m['mcc']:.4f}  "
               f"KLD {m['kld']:.4f}")
    for name, c in m["per_class"].items():
        click.echo(f"  {name:<12} IoU {fmt(c['iou'])}  F1 {fmt(c['f1'])}  precision {fmt(c['precision'])}  "
                   f"recall {fmt(c['recall'])}  support {c['support']:,}")
    if out_dir is not None:
        click.echo(f"report written to {out_dir}")


def fmt(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:.4f}"
