"""``eoseg train --config configs/NAME.yaml [--set key=value ...]``."""

from __future__ import annotations

from pathlib import Path

import click

from eoseg.cli.options import overwrite_opt, quiet_opt


@click.command("train")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training YAML config (see configs/resunet-gym.yaml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value (dotted keys, YAML values), e.g. --set epochs=5.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None, help="Dataset directory.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory (default: the config's out:).")
@click.option("--resume", type=click.Path(exists=True, path_type=Path), default=None,
              help="Resume from a run directory or its checkpoint.pt.")
@click.option("--seeds", default=None, metavar="N,N,...",
              help="Train one run per seed (<out>/seed-N) and bundle the one with the best validation score.")
@overwrite_opt
@quiet_opt
def command(config_path: Path, overrides: tuple[str, ...], data: Path | None, out_dir: Path | None,
            resume: Path | None, seeds: str | None, overwrite: bool, quiet: bool) -> None:
    """Train a model on an eoseg dataset and write a bundle that `eoseg predict` loads."""
    from eoseg.config import TrainConfig, load_config
    from eoseg.errors import ConfigError
    from eoseg.train import train, train_seeds

    extra: dict = {}
    for key, value in (("data", data), ("out", out_dir), ("resume", resume)):
        if value is not None:
            extra[key] = str(value)
    if overwrite:
        extra["overwrite"] = True
    if quiet:
        extra["progress"] = False
    cfg = load_config(TrainConfig, config_path, overrides, extra=extra)
    if seeds is None:
        result = train(cfg)
    else:
        try:
            numbers = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {seeds!r} is not a comma-separated list of integers", path="--seeds",
                              fix="e.g. --seeds 42,7,1") from None
        result = train_seeds(cfg, numbers)
    m = result.val_metrics
    click.echo(f"{result.bundle}: best epoch {result.best_epoch}/{result.epochs_run} "
               f"({result.monitor}={result.best_value:.4f}); validation accuracy {m['overall_accuracy']:.4f}, "
               f"mean IoU {m['mean_iou']:.4f}; {result.wall_s:.0f} s")
