"""``eoseg models``: list the architectures and the packaged model bundles."""

from __future__ import annotations

import json

import click

from eoseg.bundle import CARD_FILE, ModelCard, packaged_bundles, read_card, resolve_bundle
from eoseg.errors import BundleError
from eoseg.models import describe_models, input_multiple

MIOU_KEYS = ("mean_iou", "miou", "mIoU")
METRIC_GROUPS = ("test", "validation", "val")


def mean_iou(card: ModelCard) -> float | None:
    """The card's mean IoU: ``metrics.mean_iou`` (or ``miou``), else from ``metrics.test`` / ``validation``."""
    for group in (card.metrics, *(card.metrics.get(g) for g in METRIC_GROUPS)):
        if not isinstance(group, dict):
            continue
        for key in MIOU_KEYS:
            value = group.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def bundle_rows() -> list[dict]:
    """One row per packaged bundle; an unreadable card gives a row with ``error``."""
    rows = []
    for name in packaged_bundles():
        try:
            card = read_card(resolve_bundle(name) / CARD_FILE)
        except BundleError as exc:
            rows.append({"name": name, "error": exc.problem})
            continue
        rows.append({"name": name, "arch": card.arch, "bands": list(card.bands), "tile_size": card.tile_size,
                     "mean_iou": mean_iou(card), "description": card.description})
    return rows


def _echo_table(archs: list[tuple[str, str]], rows: list[dict]) -> None:
    width = max(len(n) for n, _ in archs)
    click.echo("Architectures (input H, W multiple):")
    for name, desc in archs:
        click.echo(f"  {name:<{width}}  {input_multiple(name):>3}  {desc}")
    click.echo("\nPackaged bundles:")
    if not rows:
        click.echo("  (none)")
    for row in rows:
        if "error" in row:
            click.echo(f"  {row['name']}  unreadable card: {row['error']}")
            continue
        miou = "—" if row["mean_iou"] is None else f"{row['mean_iou']:.3f}"
        click.echo(f"  {row['name']}  arch={row['arch']}  bands={','.join(row['bands'])}  "
                   f"tile={row['tile_size']}  mIoU={miou}")


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List model architectures and packaged model bundles."""
    archs, rows = describe_models(), bundle_rows()
    if as_json:
        data = {"architectures": [{"name": n, "description": d, "input_multiple": input_multiple(n)}
                                  for n, d in archs], "bundles": rows}
        click.echo(json.dumps(data, indent=2))
    else:
        _echo_table(archs, rows)
