"""``eoseg dataset``: build model-ready tiles, splits and a manifest from a dataset config."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import overwrite_opt, quiet_opt


@click.command("dataset")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Dataset YAML config (see configs/ocean-beach-dataset.yaml).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory (default: the config's out:).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set tile_size=128 --set split.seed=1.")
@overwrite_opt
@quiet_opt
def command(config_path: Path, out_dir: Path | None, overrides: tuple[str, ...], overwrite: bool, quiet: bool) -> None:
    """Cut labelled scenes or Gym/Doodler image folders into tiles with a grouped train/validation/test split."""
    from eoseg.config import DatasetConfig, load_config
    from eoseg.dataset import make_dataset

    cfg = load_config(DatasetConfig, config_path, overrides)
    manifest = make_dataset(cfg, out_dir, overwrite=overwrite, progress=not quiet)
    counts = manifest.data["split"]["counts"]
    parts = ", ".join(f"{k}: {v['tiles']} tiles / {v['scenes']} images" for k, v in counts.items())
    click.echo(f"{manifest.path}: bands {','.join(manifest.roles)}; {parts}")
