"""A short training run on real Ocean Beach chips: the loss falls, unseen chips beat chance, the bundle loads."""

import csv
from pathlib import Path

import pytest
import torch

from eoseg.config import DatasetConfig, TrainConfig, validate
from eoseg.dataset import make_dataset
from eoseg.errors import ConfigError, OutputExistsError
from eoseg.train import EarlyStopping, build_network, build_optimizer, resolve_precision, train

OB = Path(__file__).parent / "data" / "ocean_beach"


def dataset_config() -> DatasetConfig:
    return validate(DatasetConfig, {
        "sources": [{"kind": "folder", "labels": str(OB / "labels"), "bands": [
            {"folder": str(OB / "images_rgb"), "roles": ["red", "green", "blue"]},
            {"folder": str(OB / "images_nir"), "roles": ["nir"], "stem_replace": [["_ir-", "-"]]}]}],
        "tile_size": 64,
        # 3 dates: one each for train / validation / test, so validation and test chips are never seen
        "split": {"train": 0.34, "validation": 0.33, "test": 0.33, "seed": 0, "group_by": "date"},
    })


def train_config(data: Path, out: Path, **extra) -> TrainConfig:
    cfg = {"data": str(data), "out": str(out), "progress": False, "seed": 0, "batch_size": 4, "epochs": 12,
           "model": {"name": "resunet", "params": {"filters": 4}}, "loss": {"name": "cce"},
           "optimizer": {"lr": 1e-3}, "early_stopping": {"monitor": "val_miou", "patience": 6}}
    cfg.update(extra)
    return validate(TrainConfig, cfg)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(dataset_config(), tmp_path_factory.mktemp("train") / "ds").path


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    return train(train_config(data, tmp_path_factory.mktemp("train") / "run"))


def test_loss_falls_and_unseen_chips_beat_chance(run, data):
    from eoseg.evaluate import evaluate_bundle

    losses = [r["train_loss"] for r in run.history]
    assert losses[-1] < 0.7 * losses[0]
    report = evaluate_bundle(run.bundle, data, "test")  # a date neither trained on nor used for early stopping
    cm = report.confusion
    majority = cm.sum(axis=1).max() / cm.sum()
    assert report.metrics["overall_accuracy"] > majority + 0.05
    assert report.metrics["mcc"] > 0.3  # chance is 0
    assert report.metrics["mean_iou"] > 0.3  # the majority guess scores majority / 4 < 0.15


def test_best_weights_restored_and_recorded(run):
    best = max(r["val_miou"] for r in run.history)
    assert run.best_value == pytest.approx(best)
    assert run.val_metrics["mean_iou"] == pytest.approx(best, abs=1e-6)
    assert run.history[run.best_epoch - 1]["val_miou"] == pytest.approx(best)


def test_run_directory_and_bundle(run):
    from eoseg.bundle import load_bundle

    d = run.run_dir
    for name in ("config.yaml", "history.csv", "training_curves.png", "checkpoint.pt"):
        assert (d / name).is_file(), name
    rows = list(csv.DictReader((d / "history.csv").open()))
    assert len(rows) == run.epochs_run and {"epoch", "lr", "train_loss", "val_loss", "val_miou"} <= set(rows[0])
    bundle = load_bundle(run.bundle)
    card = bundle.card
    assert card.arch == "resunet" and card.arch_params == {"filters": 4}
    assert list(card.bands) == ["red", "green", "blue", "nir"]
    assert card.standardization["mode"] == "scene"
    assert card.metrics["validation"]["mean_iou"] == pytest.approx(run.val_metrics["mean_iou"])
    # the card's validation metrics were computed with the best epoch's weights: the bundle stores exactly those
    best = torch.load(d / "checkpoint.pt", weights_only=False)["best_state"]
    stored = bundle.model.state_dict()
    assert best.keys() == stored.keys()
    for key, value in best.items():
        assert stored[key].dtype == value.dtype and torch.equal(stored[key], value.cpu()), key
    assert card.training["groups"]["test"] and card.training["best_epoch"] == run.best_epoch
    x = torch.zeros(1, 4, 64, 64)
    assert bundle.model(x).shape == (1, 4, 64, 64)


def test_resume_continues_identically(data, tmp_path):
    full = train(train_config(data, tmp_path / "full", epochs=2, bands=["red", "nir"]))
    train(train_config(data, tmp_path / "part", epochs=1, bands=["red", "nir"]))
    part = str(tmp_path / "part")
    resumed = train(train_config(data, tmp_path / "part", epochs=2, bands=["red", "nir"], resume=part))
    assert len(resumed.history) == 2
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-4)


def test_refuses_to_overwrite_a_run(data, run):
    with pytest.raises(OutputExistsError, match="a training run already exists"):
        train(train_config(data, run.run_dir, epochs=1))


def test_transfer_learning_options():
    cfg = train_config(Path("d"), Path("o"), model={"name": "smp-unet", "params": {"encoder_name": "resnet18"},
                                                   "freeze_encoder": False, "encoder_lr_factor": 0.1})
    model = build_network(cfg, 5, 4)
    assert model.encoder.conv1.in_channels == 5  # first convolution takes every band
    opt = build_optimizer(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-4])
    frozen = cfg.model_copy(update={"model": cfg.model.model_copy(update={"freeze_encoder": True,
                                                                          "encoder_lr_factor": 1.0})})
    model = build_network(frozen, 5, 4)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    n_opt = sum(p.numel() for g in build_optimizer(model, frozen).param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters() if p.requires_grad)
    gym = train_config(Path("d"), Path("o"), model={"name": "resunet", "freeze_encoder": True})
    with pytest.raises(ConfigError, match="has no separate encoder"):
        build_network(gym, 4, 4)


def test_early_stopping_and_precision():
    stop = EarlyStopping("min", patience=2)
    assert stop.update(1.0, 0) and not stop.update(1.0, 1) and not stop.should_stop
    assert not stop.update(2.0, 2) and stop.should_stop and stop.best_epoch == 0
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_history_plot_leaves_the_matplotlib_backend_alone(tmp_path, monkeypatch):
    import matplotlib

    from eoseg.train import plot_history

    switches = []
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: switches.append(a))
    history = [{"epoch": e, "lr": 1e-3 / e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_miou": 0.1 * e}
               for e in (1, 2)]
    plot_history(history, tmp_path / "curves.png", "val_miou")
    assert switches == [] and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
