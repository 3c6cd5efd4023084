"""``eoseg models``: list the architectures and the packaged model bundles, with what a user needs to choose.

For each packaged bundle: its bands (roles, in input order), the units it expects (from its standardization
mode), the ground resolution it was trained for, the default tile and overlap, and the headline metrics its
card records (held-out sites from ``bench/models.py``, test, validation). The default bundle is marked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from eoseg.bundle import CARD_FILE, DEFAULT_MODEL, ModelCard, packaged_bundles, read_card, resolve_bundle
from eoseg.errors import BundleError
from eoseg.models import describe_models, input_multiple

MIOU_KEYS = ("mean_iou", "miou", "mIoU")
METRIC_GROUPS = ("test", "validation", "val")
# What a scene's pixel values must be, by standardization mode (eoseg.standardize.MODES).
UNITS = {
    "reflectance": "reflectance (0-1) from product metadata",
    "log-reflectance": "reflectance (0-1) from product metadata, log-scaled",
    "stretch": "any (per-scene percentile stretch)",
    "scene": "any (per-scene z-score)",
    "image": "any (per-tile z-score)",
    "fixed": "the training data's units (fixed mean/std)",
}
# (label, path into card.metrics to a dict holding a mean IoU), headline first.
HEADLINE = (
    ("held_out_sites", ("held_out_sites", "dense", "coastal sites")),
    ("held_out_strokes", ("held_out_sites", "strokes", "coastal sites")),
    ("held_out_points", ("held_out_sites", "points", "coastal sites")),
    ("test", ("test",)),
    ("validation", ("validation",)),
    ("validation", ("val",)),
)
PEERS = ("held_out_sites", "peers_miou")


def _miou_of(group: object) -> float | None:
    if not isinstance(group, dict):
        return None
    for key in MIOU_KEYS:
        value = group.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _dig(data: dict, path: Sequence[str]) -> object:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def mean_iou(card: ModelCard) -> float | None:
    """The card's mean IoU: ``metrics.mean_iou`` (or ``miou``), else from ``metrics.test`` / ``validation``."""
    for group in (card.metrics, *(card.metrics.get(g) for g in METRIC_GROUPS)):
        value = _miou_of(group)
        if value is not None:
            return value
    return None


def headline_metrics(card: ModelCard) -> dict[str, float]:
    """Mean IoUs the card records, by where they were measured (only those present), headline first."""
    found: dict[str, float] = {}
    for label, path in HEADLINE:
        value = _miou_of(_dig(card.metrics, path))
        if value is not None and label not in found:
            found[label] = value
    top = _miou_of(card.metrics)
    if top is not None:
        found.setdefault("reported", top)
    return found


def peer_metrics(card: ModelCard) -> dict[str, float]:
    """Other classifiers' mean IoU on the same held-out sites (``bench/models.py``; dense reference)."""
    peers = _dig(card.metrics, PEERS)
    if not isinstance(peers, dict):
        return {}
    out = {}
    for name, value in peers.items():
        value = value.get("dense") if isinstance(value, dict) else value
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[str(name)] = float(value)
    return out


def units(card: ModelCard) -> str:
    mode = card.standardization.get("mode", "scene")
    return UNITS.get(mode, f"see the card ({mode} standardization)")


def bundle_row(name: str, card: ModelCard) -> dict:
    """What ``eoseg models`` shows of one bundle (also its ``--json`` entry)."""
    members = ({"arch": card.arch_params.get("arch"), "members": card.arch_params.get("members")}
               if card.arch == "ensemble" else None)
    return {"name": name, "default": name == DEFAULT_MODEL, "arch": card.arch, "ensemble_of": members,
            "bands": list(card.bands),
            "standardization": card.standardization.get("mode", "scene"), "units": units(card),
            "resolution_m": list(card.resolution_m) if card.resolution_m else None,
            "tile_size": card.tile_size, "overlap": card.overlap, "mean_iou": mean_iou(card),
            "metrics": headline_metrics(card), "peers": peer_metrics(card), "description": card.description}


def bundle_rows() -> list[dict]:
    """One row per packaged bundle; an unreadable card gives a row with ``error``."""
    rows = []
    for name in packaged_bundles():
        try:
            card = read_card(resolve_bundle(name) / CARD_FILE)
        except BundleError as exc:
            rows.append({"name": name, "default": name == DEFAULT_MODEL, "error": exc.problem})
            continue
        rows.append(bundle_row(name, card))
    return rows


def _resolution(row: dict) -> str:
    res = row["resolution_m"]
    if not res:
        return "not recorded"
    return f"{res[0]:g} m" if res[0] == res[1] else f"{res[0]:g}-{res[1]:g} m"


def _metrics_line(row: dict) -> str:
    names = {"held_out_sites": "held-out sites", "held_out_strokes": "held-out strokes",
             "held_out_points": "held-out points"}
    text = ", ".join(f"{names.get(k, k)} {v:.3f}" for k, v in row["metrics"].items()) or "—"
    if row["peers"]:
        text += " (peers, held-out sites: " + ", ".join(f"{k} {v:.3f}" for k, v in row["peers"].items()) + ")"
    return text


def _echo_bundle(row: dict) -> None:
    mark = "*" if row["default"] else " "
    if "error" in row:
        click.echo(f"{mark} {row['name']}  unreadable card: {row['error']}")
        return
    arch = row["arch"]
    if row.get("ensemble_of"):
        arch = f"ensemble of {row['ensemble_of']['members']} {row['ensemble_of']['arch']}"
    click.echo(f"{mark} {row['name']}  {arch} on {len(row['bands'])} bands: {', '.join(row['bands'])}")
    click.echo(f"      units: {row['units']}")
    click.echo(f"      resolution: {_resolution(row)}; tile {row['tile_size']} px, overlap {row['overlap']} px")
    click.echo(f"      mIoU: {_metrics_line(row)}")
    if row["description"]:
        click.echo(f"      {row['description'].split('. ')[0].rstrip('.')}.")  # the first sentence (all in --json)


def _echo_table(archs: list[tuple[str, str]], rows: list[dict]) -> None:
    width = max(len(n) for n, _ in archs)
    click.echo("Architectures (input H, W multiple):")
    for name, desc in archs:
        click.echo(f"  {name:<{width}}  {input_multiple(name):>3}  {desc}")
    click.echo(f"\nPackaged bundles (* default: eoseg predict without --model uses {DEFAULT_MODEL}):")
    if not rows:
        click.echo("  (none)")
    for row in rows:
        _echo_bundle(row)


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List model architectures and packaged model bundles (bands, units, resolution, tiles, metrics)."""
    archs, rows = describe_models(), bundle_rows()
    if as_json:
        data = {"architectures": [{"name": n, "description": d, "input_multiple": input_multiple(n)}
                                  for n, d in archs], "default": DEFAULT_MODEL, "bundles": rows}
        click.echo(json.dumps(data, indent=2))
    else:
        _echo_table(archs, rows)
