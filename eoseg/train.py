"""``eoseg train``: fit a registry model on an eoseg dataset and write a model bundle.

:func:`train` takes a validated :class:`~eoseg.config.TrainConfig` and returns a :class:`TrainResult`.
The run directory (``config.out``) receives ``config.yaml`` (every resolved value), ``history.csv``,
``training_curves.png``, ``checkpoint.pt`` (for ``resume``) and, by default, the bundle in ``bundle/``.
The tiles are standardized exactly as the bundle card records, so ``eoseg predict`` feeds the model the
same transform it was trained with.
"""

from __future__ import annotations

import copy
import csv
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import yaml
from torch import nn

from eoseg.augment import Augmenter
from eoseg.config import TrainConfig, dump_config
from eoseg.dataset import Manifest, TileDataset, load_manifest, standardization_for
from eoseg.device import autocast_dtype, resolve_device
from eoseg.device import resolve_precision as resolve_device_precision
from eoseg.errors import ConfigError, DatasetError, OutputExistsError
from eoseg.losses import build_loss
from eoseg.metrics import ConfusionMeter, KLAccumulator, metrics_from_confusion, summary
from eoseg.schedule import EpochScheduler, base_lr

if TYPE_CHECKING:
    from eoseg.bundle import ModelCard

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
CURVES = "training_curves.png"


@dataclass
class TrainResult:
    run_dir: Path
    bundle: Path
    best_epoch: int
    best_value: float
    monitor: str
    epochs_run: int
    stopped_early: bool
    wall_s: float
    val_metrics: dict
    history: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training, or None for fp32 (policy in :mod:`eoseg.device`).

    channels_last is not used in training (a bf16 + channels_last backward aborted here).
    """
    return autocast_dtype(resolve_device_precision(precision, device))


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def model_input(manifest: Manifest, cfg: TrainConfig) -> tuple[list[str], list[int]]:
    roles = list(cfg.bands) if cfg.bands else manifest.roles
    return roles, manifest.band_indexes(roles)


def build_network(cfg: TrainConfig, in_channels: int, num_classes: int) -> nn.Module:
    from eoseg.models import build_model

    model = build_model(cfg.model.name, in_channels, num_classes, **cfg.model.params)
    if cfg.model.freeze_encoder or cfg.model.encoder_lr_factor != 1.0:
        encoder = _encoder(model, cfg.model.name)
        if cfg.model.freeze_encoder:
            for p in encoder.parameters():
                p.requires_grad_(False)
    return model


def _give_input_statistics(model: nn.Module, template) -> None:
    """A model computing spectral indices from its input learns on reflectance: it is given the z-score."""
    from eoseg.models.unet import set_input_statistics

    if getattr(model, "indices", None) is None:
        return
    if template.mode != "reflectance" or template.mean is None:
        raise ConfigError(f"model.params.indices needs reflectance inputs, not {template.mode!r} standardization",
                          path="model.params.indices", fix="set standardization: reflectance, or drop indices")
    set_input_statistics(model, template.mean, template.std)


def _encoder(model: nn.Module, name: str) -> nn.Module:
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ConfigError(f"model {name!r} has no separate encoder", path="model.freeze_encoder",
                          fix="use freeze_encoder / encoder_lr_factor with an smp architecture (e.g. smp-unet)")
    return encoder


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam / AdamW; the encoder (if any) gets ``lr × encoder_lr_factor``; frozen parameters are left out."""
    lr = base_lr(cfg.schedule, cfg.optimizer.lr)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if cfg.model.encoder_lr_factor != 1.0:
        enc_ids = {id(p) for p in _encoder(model, cfg.model.name).parameters()}
        groups = [
            {"params": [p for p in trainable if id(p) not in enc_ids], "lr": lr},
            {"params": [p for p in trainable if id(p) in enc_ids], "lr": lr * cfg.model.encoder_lr_factor},
        ]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": trainable, "lr": lr}]
    cls = torch.optim.AdamW if cfg.optimizer.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr, weight_decay=cfg.optimizer.weight_decay)


def make_loader(ds: TileDataset, batch_size: int, shuffle: bool, seed: int, workers: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                       num_workers=workers, drop_last=False)


# ------------------------------------------------------------------------------------------- epochs


class EarlyStopping:
    def __init__(self, mode: str, patience: int):
        self.mode, self.patience = mode, patience
        self.best = -np.inf if mode == "max" else np.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """True when ``value`` improves on the best so far."""
        better = value > self.best if self.mode == "max" else value < self.best
        if better and np.isfinite(value):
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm running statistics (Polyak averaging):
    ``module`` is a copy of the model that :meth:`update` moves ``1 - decay`` of the way to the model's state.
    Integer buffers (BatchNorm's batch counters) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, current in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(current.detach(), 1.0 - self.decay)
            else:
                avg.copy_(current)


def train_epoch(model: nn.Module, loader: Iterable, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                augmenter: Augmenter, device: torch.device, amp: torch.dtype | None, scaler, bar=None,
                after_step: Callable[[nn.Module], None] | None = None) -> float:
    model.train()
    total, count = 0.0, 0
    for x, y, _ in loader:
        x, y = augmenter(x, y)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step(model)
        total += float(loss.detach()) * x.shape[0]
        count += x.shape[0]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: Iterable, loss_fn: nn.Module | None, num_classes: int,
                    ignore: int, device: torch.device, amp: torch.dtype | None,
                    names: list[str] | None = None) -> tuple[float, dict]:
    """(mean loss, metrics) of ``model`` over every tile of ``loader``."""
    model.eval()
    meter, kl = ConfusionMeter(num_classes, ignore), KLAccumulator(ignore)
    total, count = 0.0, 0
    for x, y, _ in loader:
        x, y = x.to(device), y.to(device)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        if loss_fn is not None:
            total += float(loss_fn(logits, y)) * x.shape[0]
            count += x.shape[0]
        meter.update(y, logits.argmax(dim=1))
        kl.update(logits.softmax(dim=1), y)
    return total / max(count, 1), metrics_from_confusion(meter.matrix, names, kl.value)


def validation_metrics(model: nn.Module, card: ModelCard, data: str | Path, batch_size: int = 8) -> dict:
    """``model``'s metrics over ``data``'s validation split, scored as training scores its bundles (every tile
    whole, each at its own weight), so the figure compares with a trained card's ``metrics.validation``.

    ``card`` gives the bands, standardization and classes.
    """
    from eoseg.evaluate import model_scheme
    from eoseg.standardize import Standardization

    manifest = load_manifest(data)
    names = model_scheme(card.classes, manifest, None).names
    ds = TileDataset(manifest, "validation", list(card.bands), Standardization.from_dict(card.standardization))
    if len(ds) == 0:
        raise DatasetError("the validation split holds no tiles", path=manifest.path,
                           fix="validate on a dataset with a validation split")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        _, metrics = evaluate_loader(model.cpu(), loader, None, len(names), manifest.ignore_value,
                                     torch.device("cpu"), None, names)
    return metrics


# ------------------------------------------------------------------------------------------- outputs


def write_history(history: list[dict], path: Path) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def plot_history(history: list[dict], path: Path, monitor: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(13, 3.6))  # no pyplot, no backend switch
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for key in ("train_loss", "val_loss"):
        axes[0].plot(epochs, [r[key] for r in history], marker=".", label=key)
    for key in ("val_miou", "val_accuracy", "val_dice"):
        axes[1].plot(epochs, [r.get(key, np.nan) for r in history], marker=".", label=key)
    axes[2].semilogy(epochs, [r["lr"] for r in history], marker=".")
    for ax, title in zip(axes, ("loss", f"validation metrics (monitor: {monitor})", "learning rate"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _prepare_run_dir(cfg: TrainConfig) -> Path:
    run_dir = Path(cfg.out)
    if cfg.resume is None and (run_dir / HISTORY).exists() and not cfg.overwrite:
        raise OutputExistsError("a training run already exists here", path=run_dir,
                                fix="pass --overwrite, --set out=<new dir>, or resume with --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _card_params(params: dict) -> dict:
    """Architecture parameters for the card: the trained weights replace any encoder weights file."""
    return {k: (None if k == "encoder_weights" else v) for k, v in params.items()}


def _save_checkpoint(path: Path, state: dict) -> None:
    from eoseg.outputs.atomic import atomic_write

    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(resume: Path) -> dict:
    path = resume / CHECKPOINT if resume.is_dir() else resume
    if not path.is_file():
        raise DatasetError("no checkpoint to resume from", path=path, fix="give a run directory or checkpoint.pt")
    return torch.load(path, map_location="cpu", weights_only=False)


# ------------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig) -> TrainResult:
    """Train per ``cfg``; returns the run summary (the bundle path, best epoch, validation metrics)."""
    from tqdm import tqdm

    from eoseg.models import input_multiple

    start = time.perf_counter()
    seed_everything(cfg.seed)
    manifest = load_manifest(cfg.data)
    roles, band_idx = model_input(manifest, cfg)
    template = standardization_for(manifest, cfg.standardization, band_idx)
    train_ds = TileDataset(manifest, "train", roles, template)
    val_ds = TileDataset(manifest, "validation", roles, template)
    for ds in (train_ds, val_ds):
        if len(ds) == 0:
            raise DatasetError(f"the {ds.split} split holds no tiles", path=manifest.path,
                               fix="rebuild the dataset with a non-zero fraction for that split")
    scheme, ignore = manifest.classes, manifest.ignore_value
    num_classes = len(scheme)
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    model = build_network(cfg, len(roles), num_classes)
    _give_input_statistics(model, template)
    model = model.to(device)
    multiple = input_multiple(cfg.model.name)
    if manifest.tile_size % multiple:
        raise ConfigError(f"dataset tile size {manifest.tile_size} is not a multiple of {multiple} "
                          f"(required by {cfg.model.name})", path=cfg.data, fix="rebuild with another tile_size")
    loss_fn = build_loss(cfg.loss.name, num_classes, cfg.loss.class_weights, ignore, **cfg.loss.params).to(device)
    optimizer = build_optimizer(model, cfg)
    monitor, mode = cfg.early_stopping.monitor, cfg.early_stopping.resolved_mode
    scheduler = EpochScheduler(optimizer, cfg.schedule, cfg.epochs, mode)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    augmenter = Augmenter(cfg.augment, seed=cfg.seed, ignore_index=ignore, space=template.reflectance_space)
    stopper = EarlyStopping(mode, cfg.early_stopping.patience)
    run_dir = _prepare_run_dir(cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False))
    train_loader = make_loader(train_ds, cfg.batch_size, True, cfg.seed, cfg.num_workers)
    val_loader = make_loader(val_ds, cfg.batch_size, False, cfg.seed, cfg.num_workers)

    average = WeightAverage(model, cfg.ema) if cfg.ema else None
    scored = average.module if average else model  # the weights validated, early-stopped on and bundled
    history: list[dict] = []
    best_state, best_metrics = copy.deepcopy(model.state_dict()), {}
    first_epoch = 0
    if cfg.resume is not None:
        ck = _load_checkpoint(Path(cfg.resume))
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        augmenter.generator.set_state(ck["augment_rng"])
        if average is not None:
            average.module.load_state_dict(ck["average"])
        train_loader.generator.set_state(ck["loader_rng"])
        torch.set_rng_state(ck["torch_rng"])
        best_state, best_metrics, history = ck["best_state"], ck["best_metrics"], ck["history"]
        first_epoch = ck["epoch"] + 1
        stopper.best, stopper.best_epoch, stopper.bad_epochs = ck["best"], ck["best_epoch"], ck["bad_epochs"]

    names = scheme.names
    stopped_early = False
    for epoch in range(first_epoch, cfg.epochs):
        if stopper.should_stop:
            stopped_early = True
            break
        t0 = time.perf_counter()
        lr = scheduler.lr
        with tqdm(total=len(train_loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress,
                  leave=False, unit="batch") as bar:
            train_loss = train_epoch(model, train_loader, loss_fn, optimizer, augmenter, device, amp, scaler, bar,
                                     after_step=average.update if average else None)
        val_loss, val_metrics = evaluate_loader(scored, val_loader, loss_fn, num_classes, ignore, device, amp, names)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
               **summary(val_metrics, "val_"), "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if monitor not in row:
            raise ConfigError(f"early_stopping.monitor {monitor!r} is not a logged value",
                              path="early_stopping.monitor", fix=f"use one of: {', '.join(list(row)[2:-1])}")
        if stopper.update(row[monitor], epoch):
            best_state, best_metrics = copy.deepcopy(scored.state_dict()), val_metrics
        scheduler.step(row[monitor])
        if cfg.progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        write_history(history, run_dir / HISTORY)
        _save_checkpoint(run_dir / CHECKPOINT, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "best_state": best_state, "best_metrics": best_metrics,
            "history": history,
            "best": stopper.best, "best_epoch": stopper.best_epoch, "bad_epochs": stopper.bad_epochs,
            "augment_rng": augmenter.generator.get_state(), "loader_rng": train_loader.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "config": dump_config(cfg),
            "average": average.module.state_dict() if average else None,
        })
    else:
        stopped_early = stopper.should_stop and len(history) < cfg.epochs

    model.load_state_dict(best_state)  # the validation metrics of these weights are best_metrics
    val_metrics = best_metrics or evaluate_loader(model, val_loader, None, num_classes, ignore, device, amp, names)[1]
    plot_history(history, run_dir / CURVES, monitor)
    wall = time.perf_counter() - start
    bundle = _write_bundle(model, cfg, manifest, roles, template, val_metrics, history, stopper, wall, run_dir)
    return TrainResult(run_dir, bundle, stopper.best_epoch + 1, stopper.best, monitor, len(history),
                       stopped_early, wall, val_metrics, history)


def _write_bundle(model, cfg, manifest, roles, template, val_metrics, history, stopper, wall, run_dir) -> Path:
    from eoseg.bundle import ModelCard, save_bundle

    card = ModelCard(
        name=cfg.bundle.name, arch=cfg.model.name, arch_params=_card_params(cfg.model.params), bands=tuple(roles),
        standardization=template.to_dict(), classes=manifest.classes.to_dict(),
        tile_size=cfg.bundle.tile_size or manifest.tile_size,
        overlap=cfg.bundle.overlap if cfg.bundle.overlap is not None else max(0, (cfg.bundle.tile_size
                                                                                 or manifest.tile_size) // 8),
        resolution_m=cfg.bundle.resolution_m,
        training={
            "config": dump_config(cfg), "dataset": str(manifest.path),
            "splits": {k: v["tiles"] for k, v in manifest.data["split"]["counts"].items()},
            "groups": {k: v["groups"] for k, v in manifest.data["split"]["counts"].items()},
            "scene_bands": {sid: {"bands": sc.get("bands"), "scaling": sc.get("scaling")}
                            for sid, sc in manifest.scenes.items() if sc.get("bands")},
            "epochs_run": len(history), "best_epoch": stopper.best_epoch + 1,
            "monitor": cfg.early_stopping.monitor, "best_value": stopper.best, "wall_seconds": round(wall, 1),
        },
        metrics={"validation": val_metrics},
        description=cfg.bundle.description,
    )
    directory = cfg.bundle.directory or run_dir / "bundle"
    return save_bundle(model.cpu(), card, directory, overwrite=cfg.bundle.overwrite or cfg.overwrite
                       or cfg.resume is not None)


# ------------------------------------------------------------------------------------------- seed sweep

SEEDS_TABLE = "seeds.csv"


def train_seeds(cfg: TrainConfig, seeds: Sequence[int]) -> TrainResult:
    """One run per seed (``<out>/seed-<n>``), and the bundle of the run whose validation ``monitor`` is best.

    On small datasets runs of one recipe differ by seed more than recipes differ (bench/models.py, README), and
    the validation score ranks them by how they map held-out sites; picking by it never looks at a test set.
    Writes ``<out>/seeds.csv`` (seed, best epoch, best value, validation mean IoU, chosen) and records the sweep
    in the chosen bundle's card (``training.seed_sweep``).
    """
    from eoseg.bundle import load_bundle, refuse_existing_bundle, save_bundle

    seeds = list(dict.fromkeys(seeds))
    if len(seeds) < 2:
        raise ConfigError("a seed sweep needs two or more different seeds", path="--seeds", fix="e.g. --seeds 42,7,1")
    if cfg.resume is not None:
        raise ConfigError("--resume continues one run, not a seed sweep", path="--resume",
                          fix="resume <out>/seed-<n> on its own (without --seeds), then sweep again")
    out = Path(cfg.out)
    target = Path(cfg.bundle.directory or out / "bundle")
    overwrite = cfg.bundle.overwrite or cfg.overwrite
    refuse_existing_bundle(target, overwrite)  # before the runs, not after hours of them
    results = [train(cfg.model_copy(update={
        "seed": seed, "out": out / f"seed-{seed}",
        "bundle": cfg.bundle.model_copy(update={"directory": out / f"seed-{seed}" / "bundle"})}))
        for seed in seeds]
    pick = max if cfg.early_stopping.resolved_mode == "max" else min
    best = pick(results, key=lambda r: r.best_value)
    sweep = [{"seed": seed, "best_epoch": r.best_epoch, "best_value": r.best_value,
              "val_mean_iou": r.val_metrics.get("mean_iou"), "chosen": r is best}
             for seed, r in zip(seeds, results, strict=True)]
    bundle = load_bundle(best.bundle)
    card = replace(bundle.card, training={**bundle.card.training, "seed_sweep": sweep})
    save_bundle(copy.deepcopy(bundle.model), card, target, overwrite=overwrite)
    with (out / SEEDS_TABLE).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sweep[0]))
        writer.writeheader()
        writer.writerows(sweep)
    return replace(best, bundle=target)
