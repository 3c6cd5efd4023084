"""``eoseg ensemble``: several trained bundles (the seeds of one recipe) as one bundle."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import overwrite_opt


@click.command("ensemble")
@click.argument("members", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory of the new bundle.")
@click.option("--name", required=True, help="The bundle's name (shown by eoseg models, written into outputs).")
@click.option("--description", default="", help="The card's description (default: what the members are).")
@click.option("--validate", "validation_data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="eoseg dataset (the members' own): score the ensemble on its validation split and record it "
                   "in the card.")
@overwrite_opt
def command(members: tuple[str, ...], out_dir: Path, name: str, description: str, validation_data: Path | None,
            overwrite: bool) -> None:
    """Write one bundle whose prediction is the mean class probability of MEMBERS (bundle paths or names).

    The members must share architecture, size, bands, classes and standardization, as the seeds of one
    `eoseg train --seeds` sweep do. The result is what `eoseg predict --model a --model b` computes, in one
    bundle: predict, batch and evaluate take it like any other.

    Example: eoseg ensemble runs/s/seed-7/bundle runs/s/seed-3/bundle --name resunet --out bundles/resunet
    """
    from eoseg.bundle import ensemble_bundle

    path = ensemble_bundle(list(members), out_dir, name=name, description=description,
                           validation_data=validation_data, overwrite=overwrite)
    scored = f"; validation mIoU {_validation_miou(path):.3f}" if validation_data else ""
    click.echo(f"{path}: ensemble {name!r} of {len(members)} bundles{scored}")


def _validation_miou(path: Path) -> float:
    from eoseg.bundle import CARD_FILE, read_card

    return read_card(path / CARD_FILE).metrics["validation"]["mean_iou"]
