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


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_continues_identically(data, tmp_path, ema):
    full = train(train_config(data, tmp_path / "full", epochs=2, bands=["red", "nir"], ema=ema))
    train(train_config(data, tmp_path / "part", epochs=1, bands=["red", "nir"], ema=ema))
    part = str(tmp_path / "part")
    resumed = train(train_config(data, tmp_path / "part", epochs=2, bands=["red", "nir"], resume=part, ema=ema))
    assert len(resumed.history) == 2
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-4)


def test_weight_average_is_what_is_validated_and_bundled(data, tmp_path):
    """``ema``: the average moves 1 - decay of the way per step, BatchNorm statistics included; the bundle holds
    the average (validated and early-stopped on), not the last step's weights."""
    from eoseg.bundle import load_bundle
    from eoseg.train import CHECKPOINT, WeightAverage

    net = build_network(train_config(data, tmp_path / "x"), 4, 4)
    average = WeightAverage(net, 0.75)
    before = {k: v.clone() for k, v in average.module.state_dict().items()}
    with torch.no_grad():
        for v in net.state_dict().values():
            v.add_(1)
    average.update(net)
    after = average.module.state_dict()
    for key, value in net.state_dict().items():
        expected = before[key] + 0.25 if value.dtype.is_floating_point else value
        assert torch.allclose(after[key], expected.to(after[key].dtype)), key

    result = train(train_config(data, tmp_path / "run", epochs=1, bands=["red", "nir"], ema=0.9))
    checkpoint = torch.load(result.run_dir / CHECKPOINT, weights_only=False)
    bundled = load_bundle(result.bundle).model.state_dict()
    name = next(k for k, v in bundled.items() if v.dtype.is_floating_point and v.dim() == 4)
    assert torch.allclose(bundled[name], checkpoint["average"][name].cpu())
    assert not torch.allclose(bundled[name], checkpoint["model"][name].cpu())


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


S2_CROP = Path(__file__).parent / "data" / "s2_virginia_10m_6band_crop.tif"


def reflectance_dataset(tmp_path: Path):
    """A 5-band dataset of the Sentinel-2 crop (reflectance from its metadata), one tile held for validation."""
    import json

    import numpy as np
    import rasterio

    with rasterio.open(S2_CROP) as ds:
        profile = {"driver": "GTiff", "height": ds.height, "width": ds.width, "count": 1, "dtype": "uint8",
                   "crs": ds.crs, "transform": ds.transform}
    label = np.full((profile["height"], profile["width"]), 3, np.uint8)
    label[:, :100] = 0
    with rasterio.open(tmp_path / "labels.tif", "w", **profile) as dst:
        dst.write(label, 1)
    dataset = make_dataset(validate(DatasetConfig, {
        "sources": [{"kind": "scene", "scene": str(S2_CROP), "roles": ["blue", "green", "red", "nir", "swir1"],
                     "labels": str(tmp_path / "labels.tif"), "name": "virginia"}],
        "tile_size": 128, "overlap": 0,
        "split": {"train": 1.0, "validation": 0.0, "test": 0.0, "group_by": "scene"}}), tmp_path / "ds")
    dataset.data["split"]["counts"]["validation"] = dataset.data["split"]["counts"]["train"]
    for t in dataset.data["tiles"][:1]:
        t["split"] = "validation"
    (dataset.path / "manifest.json").write_text(json.dumps(dataset.data))
    return dataset


@pytest.mark.parametrize("mode", ["reflectance", "log-reflectance"])
def test_reflectance_model_from_a_scene_source_records_its_bands(tmp_path, mode):
    """Train on the Sentinel-2 crop in a reflectance mode (with the albedo gain, which scales reflectance): the
    card keeps the statistics, mapping and scaling."""
    import json

    from eoseg.predict import predict_scene

    dataset = reflectance_dataset(tmp_path)
    result = train(train_config(dataset.path, tmp_path / "run", epochs=1, standardization=mode,
                                bands=["red", "swir1"], bundle={"resolution_m": [10, 30]}, augment={"gain": 0.5}))
    card = json.loads((result.bundle / "card.json").read_text())
    assert card["resolution_m"] == [10.0, 30.0]
    refl = dataset.scenes["virginia"]["stats"][mode.replace("-", "_")]
    assert card["standardization"]["mode"] == mode
    assert card["standardization"]["mean"] == pytest.approx([refl["mean"][2], refl["mean"][4]])
    bands = card["training"]["scene_bands"]["virginia"]
    assert [(b["role"], b["band"], b["description"]) for b in bands["bands"]][2:] == [
        ("red", 3, "B04"), ("nir", 4, "B08"), ("swir1", 5, "B11")]
    assert bands["scaling"]["source"] == "sentinel2"
    out = predict_scene(S2_CROP, result.bundle, tmp_path / "pred", precision="fp32")
    assert out.scaling["scale"] == pytest.approx([1e-4, 1e-4])


def test_a_model_with_spectral_indices_sees_the_scenes_ndwi(tmp_path, data):
    """``indices`` in a Gym model's parameters: training gives the model its input's reflectance z-score, the
    bundle keeps it, and the channel the model adds is the scene's NDWI (green, nir) from its reflectance."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from eoseg.bundle import load_bundle
    from eoseg.predict import Predictor, PredictSettings

    dataset = reflectance_dataset(tmp_path)
    params = {"filters": 4, "indices": [[0, 2]]}  # (green − nir) / (green + nir)
    result = train(train_config(dataset.path, tmp_path / "run", epochs=1, standardization="reflectance",
                                bands=["green", "red", "nir"], model={"name": "resunet", "params": params}))
    bundle = load_bundle(result.bundle)
    assert bundle.card.arch_params["indices"] == [[0, 2]]
    predictor = Predictor(bundle, PredictSettings(precision="fp32"))
    scene = predictor.open(S2_CROP)
    std = predictor.scene_standardization(scene)
    with rasterio.open(S2_CROP) as ds:
        raw = ds.read([2, 3, 4], window=Window(0, 0, 128, 128)).astype(np.float32)
    x = std.apply(raw.copy(), np.ones(raw.shape[1:], bool))
    with torch.no_grad():
        channels = bundle.model.indices(torch.from_numpy(x)[None])[0].numpy()
    green, nir = raw[0] * 1e-4, raw[2] * 1e-4
    assert channels.shape[0] == 4
    np.testing.assert_allclose(channels[3], (green - nir) / (green + nir), atol=1e-4)
    assert predictor.predict(S2_CROP, tmp_path / "pred", progress=False).tiles == len(predictor.scene_grid(scene))

    with pytest.raises(ConfigError, match="indices needs reflectance"):  # Ocean Beach chips: no reflectance
        train(train_config(data, tmp_path / "run2", epochs=1, model={"name": "resunet", "params": params}))
    with pytest.raises(ConfigError, match="augment.gain"):  # nor a zero reflectance to scale about
        train(train_config(data, tmp_path / "run3", epochs=1, augment={"gain": 0.5}))
    assert not (tmp_path / "run3").exists()


@pytest.mark.parametrize("loss", ["cce", "dice_focal", "lovasz"])
def test_ignore_label_training_step(loss):
    """One training step on a batch whose labels are partly 255 is the step on the labelled pixels alone.

    The reference gathers the labelled pixels' logits out of the batch (255 pixels cropped away) and
    takes the same SGD step by hand; the parameters must come out the same. A batch that is all 255
    must leave the model unchanged: 255 never reaches the loss as a class.
    """
    import copy

    from eoseg.augment import Augmenter
    from eoseg.config import AugmentConfig
    from eoseg.losses import build_loss
    from eoseg.models import build_model
    from eoseg.train import train_epoch

    torch.manual_seed(0)
    model = build_model("resunet", 4, 4, filters=4)
    x = torch.randn(2, 4, 64, 64)
    y = torch.randint(0, 4, (2, 64, 64))
    ignored = torch.zeros(2, 64, 64, dtype=torch.bool)
    ignored[0, :, 40:] = True  # a block of unsure pixels, as eoseg label leaves them
    ignored |= torch.rand(2, 64, 64) < 0.3  # and scattered ones
    y[ignored] = 255
    loss_fn = build_loss(loss, 4)
    no_augment = Augmenter(AugmentConfig(enabled=False))
    lr = 0.5

    def step(labels):
        m = copy.deepcopy(model)
        torch.manual_seed(1)  # the same dropout masks in every run
        value = train_epoch(m, [(x, labels, None)], loss_fn, torch.optim.SGD(m.parameters(), lr=lr), no_augment,
                            torch.device("cpu"), None, None)
        return m, value

    stepped, value = step(y)
    reference = copy.deepcopy(model)
    reference.train()
    torch.manual_seed(1)
    logits = reference(x)
    keep = ~ignored
    kept_logits = logits.permute(0, 2, 3, 1)[keep].T.reshape(1, 4, -1, 1)  # (1, C, P, 1): only labelled pixels
    ref_loss = loss_fn(kept_logits, y[keep].reshape(1, -1, 1))
    ref_loss.backward()
    assert value == pytest.approx(float(ref_loss.detach()), rel=1e-5)
    moved = 0.0
    with torch.no_grad():
        for (name, p), q, p0 in zip(stepped.named_parameters(), reference.parameters(), model.parameters(),
                                    strict=True):
            expected = p0 - lr * q.grad if q.grad is not None else p0
            torch.testing.assert_close(p, expected, rtol=1e-4, atol=1e-6, msg=name)
            moved += float((p - p0).abs().sum())
    assert moved > 0

    frozen, value = step(torch.full_like(y, 255))
    assert value == 0.0
    for p, p0 in zip(frozen.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, p0)


def test_history_plot_leaves_the_matplotlib_backend_alone(tmp_path, monkeypatch):
    import matplotlib

    from eoseg.train import plot_history

    switches = []
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: switches.append(a))
    history = [{"epoch": e, "lr": 1e-3 / e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_miou": 0.1 * e}
               for e in (1, 2)]
    plot_history(history, tmp_path / "curves.png", "val_miou")
    assert switches == [] and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_ensemble_validated_as_training_validates(run, data, tmp_path):
    """An ensemble of a run with itself predicts what the run predicts, so ``eoseg ensemble --validate``
    must record the validation figures training recorded for the run. (Up to a few near-tied pixels of this
    12-epoch 4-filter model: the bundled weights are bit-identical to the best epoch's, but a fresh model
    object's convolutions round differently in the last bits and flip a few of the 49k pixels.)"""
    from click.testing import CliRunner

    from eoseg.bundle import load_bundle
    from eoseg.cli import main

    args = ["ensemble", str(run.bundle), str(run.bundle), "--name", "twice", "--validate", str(data)]
    ok = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "e")])
    assert ok.exit_code == 0, ok.output
    card = load_bundle(tmp_path / "e").card
    validation = card.metrics["validation"]
    assert validation["mean_iou"] == pytest.approx(run.val_metrics["mean_iou"], abs=2e-3)
    assert validation["pixels"] == run.val_metrics["pixels"]
    assert f"validation mIoU {validation['mean_iou']:.3f}" in ok.output
    assert card.training["validation_data"] == str(data)
    recipe = load_bundle(run.bundle).card.training["config"]
    assert [m["config"] for m in card.training["members"]] == [recipe, recipe]  # each member's recipe kept
    (tmp_path / "empty").mkdir()
    bad = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "empty"), "--out", str(tmp_path / "f")])
    assert bad.exit_code != 0 and bad.output.count("\n") == 1 and "manifest" in bad.output
    assert not (tmp_path / "f").exists()
