"""Model bundles: card round trip, save / load, caching, refusals, packaged names, ``eoseg models``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import eoseg.bundle as bundle_mod
from eoseg.bundle import ModelBundle, ModelCard, load_bundle, packaged_bundles, read_card, save_bundle
from eoseg.classes import COASTAL
from eoseg.cli import main
from eoseg.errors import BundleError, ConfigError, ModelNotFoundError, OutputError, OutputExistsError
from eoseg.models import build_model

PARAMS = {"filters": 2, "kernel_size": 3}


def _card(**changes) -> ModelCard:
    base = dict(name="tiny", arch="resunet", arch_params=PARAMS, bands=("red", "green", "blue"),
                metrics={"mean_iou": 0.5}, training={"epochs": 1})
    return ModelCard(**{**base, **changes})


def _model(in_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resunet", in_channels, 4, **PARAMS)
    model(torch.randn(2, in_channels, 32, 32))  # move BatchNorm running stats off their defaults
    return model.eval()


def _other_model() -> torch.nn.Module:
    torch.manual_seed(5)
    return build_model("resunet", 3, 4, **PARAMS).eval()


@pytest.fixture
def saved(tmp_path):
    model = _model()
    return model, save_bundle(model, _card(), tmp_path / "tiny")


def test_card_round_trip_and_defaults() -> None:
    card = _card(bands=["blue", "green", "red", "nir"])
    assert card.bands == ("blue", "green", "red", "nir")
    assert card.scheme == COASTAL and card.tile_size == 512 and card.overlap == 64
    assert card.standardization["mode"] == "scene" and card.created and card.eoseg_version
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card


def test_card_resolution_is_optional_and_checked() -> None:
    card = _card(resolution_m=[10, 30])
    assert card.resolution_m == (10.0, 30.0)
    data = json.loads(json.dumps(card.to_dict()))
    assert data["resolution_m"] == [10.0, 30.0] and ModelCard.from_dict(data) == card
    old = _card().to_dict()
    del old["resolution_m"]  # cards written before the key existed
    assert ModelCard.from_dict(old).resolution_m is None
    for bad in ([30, 10], [10], [0, 10], "10-30", [10, True]):
        with pytest.raises(BundleError, match="'resolution_m' should be"):
            ModelCard.from_dict(old | {"resolution_m": bad}, source="card.json")


def test_card_unknown_keys_warn_missing_keys_raise(caplog) -> None:
    data = _card().to_dict() | {"colour_ramp": "viridis"}
    with caplog.at_level("WARNING", logger="eoseg.bundle"):
        assert ModelCard.from_dict(data).name == "tiny"
    assert "colour_ramp" in caplog.text
    del data["arch"]
    with pytest.raises(BundleError, match="missing the required key 'arch'"):
        ModelCard.from_dict(data, source="x/card.json")
    with pytest.raises(BundleError, match="'tile_size' should be int"):
        ModelCard.from_dict(_card().to_dict() | {"tile_size": "512"})


def test_round_trip_gives_the_same_outputs(saved) -> None:
    model, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == ["card.json", "model.safetensors"]
    bundle = load_bundle(directory)
    assert isinstance(bundle, ModelBundle) and not bundle.model.training
    assert bundle.card == _card().__class__.from_dict(json.loads((directory / "card.json").read_text()))
    assert len(bundle.sha256) == 64 and bundle.input_multiple == 16 and bundle.bands == ("red", "green", "blue")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loaded, original = bundle.model(x), model(x)
    torch.testing.assert_close(loaded, original, rtol=0, atol=0)  # the weights as stored are the weights
    assert next(bundle.model.parameters()).dtype == torch.float32
    from safetensors import safe_open

    with safe_open(directory / "model.safetensors", "pt") as f:
        names = f.keys()  # a safetensors handle, not a dict
        state = model.state_dict()  # stored values are exactly the model's (float16 only where that is exact)
        assert all(torch.equal(f.get_tensor(k).to(state[k].dtype), state[k]) for k in names)
    assert (directory / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert bundle.card.weights_sha256 == bundle_mod.file_sha256(directory / "model.safetensors")


def test_tiny_batchnorm_variances_round_trip_exactly(tmp_path) -> None:
    """Running variances of 1e-8 underflow in float16 (to 0 → division by eps): they must come back exact."""
    model = _model()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    with torch.no_grad():
        for i, bn in enumerate(bns):
            bn.running_var.fill_(1e-8 * (i + 1))
            bn.running_mean.fill_(3e-6)
            bn.weight.fill_(1e-5)
    bundle = load_bundle(save_bundle(model, _card(), tmp_path / "bn"))
    for key, value in model.state_dict().items():
        stored = bundle.model.state_dict()[key]
        assert stored.dtype == value.dtype and torch.equal(stored, value), key
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), model(x), rtol=0, atol=0)


def test_float16_storage_only_where_it_is_exact(tmp_path) -> None:
    """Weights that came from a float16 file are stored as float16 (half the size), bit-identical; others not."""
    from safetensors.torch import load_file

    model = _model()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "conv" in name or param.dim() > 1:
                param.copy_(param.half().float())  # exactly representable in float16
    directory = save_bundle(model, _card(), tmp_path / "half")
    stored = load_file(str(directory / "model.safetensors"))
    state = model.state_dict()
    for key, value in state.items():
        exact = value.dtype == torch.float32 and torch.equal(value.half().float(), value)
        assert stored[key].dtype == (torch.float16 if exact and value.numel() else value.dtype), key
    assert any(t.dtype == torch.float16 for t in stored.values())
    loaded = load_bundle(directory).model.state_dict()
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    plain = load_file(str(save_bundle(_model(), _card(), tmp_path / "plain") / "model.safetensors"))
    weights = [t for k, t in plain.items() if k.endswith("weight") and t.dim() > 1]
    assert weights and all(t.dtype == torch.float32 for t in weights)  # trained weights stay float32


def test_failure_between_the_renames_keeps_the_old_bundle(saved, monkeypatch) -> None:
    _, directory = saved
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    real_replace = bundle_mod.os.replace
    calls = []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # weights are in place, the card is next
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", replace_then_fail)
    with pytest.raises(OutputError, match="No space left"):
        save_bundle(_other_model(), _card(name="new", metrics={"mean_iou": 0.9}), directory, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # old weights back, no temporaries
    assert load_bundle(directory).card.name == "tiny"


def test_failure_between_the_renames_of_a_new_bundle_leaves_no_weights(tmp_path, monkeypatch) -> None:
    real_replace = bundle_mod.os.replace

    def fail_on_card(src, dst):
        if str(dst).endswith("card.json"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", fail_on_card)
    with pytest.raises(OutputError):
        save_bundle(_model(), _card(), tmp_path / "new")
    assert list((tmp_path / "new").iterdir()) == []


def test_weights_that_are_not_the_cards_are_refused(saved, tmp_path) -> None:
    """As after a crash between the two renames: new weights next to the old card."""
    _, directory = saved
    other = save_bundle(_other_model(), _card(name="other"), tmp_path / "other")
    (directory / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(BundleError, match="not the file this card was written with"):
        load_bundle(directory)
    card = json.loads((directory / "card.json").read_text())
    del card["weights_sha256"]  # cards written before the hash existed still load
    (directory / "card.json").write_text(json.dumps(card))
    assert load_bundle(directory).card.weights_sha256 is None


def test_device_bundles_are_not_kept_alive_by_the_cache(saved) -> None:
    """Bundles off the CPU ('meta' stands in for CUDA here) go when their user drops them."""
    import gc
    import weakref

    _, directory = saved
    cpu = load_bundle(directory)
    on_device = load_bundle(directory, device="meta")
    assert load_bundle(directory, device="meta") is on_device  # shared while in use
    assert next(on_device.model.parameters()).device.type == "meta"
    assert next(cpu.model.parameters()).device.type == "cpu"  # the cached CPU model is not moved
    ref = weakref.ref(on_device.model)
    del on_device
    gc.collect()
    assert ref() is None
    assert load_bundle(directory) is cpu


def test_load_by_card_path_and_cache(saved) -> None:
    _, directory = saved
    first = load_bundle(directory)
    assert load_bundle(directory / "card.json") is first
    assert load_bundle(str(directory)) is first


def test_overwrite_refused_then_allowed(saved) -> None:
    _, directory = saved
    first = load_bundle(directory)
    with pytest.raises(OutputExistsError, match="overwrite"):
        save_bundle(_model(), _card(), directory)
    save_bundle(_model(), _card(name="tiny2"), directory, overwrite=True)
    second = load_bundle(directory)
    assert second is not first and second.card.name == "tiny2" and second.sha256 != first.sha256
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_corrupt_card_and_weights_raise_bundle_error(saved) -> None:
    _, directory = saved
    (directory / "card.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(directory)
    save_bundle(_model(), _card(), directory, overwrite=True)
    (directory / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(BundleError, match="not the file this card was written with"):
        load_bundle(directory)
    card = json.loads((directory / "card.json").read_text()) | {"weights_sha256": None}
    (directory / "card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="weights cannot be read"):
        load_bundle(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="missing model.safetensors"):
        load_bundle(directory)


def test_card_that_does_not_match_the_weights(tmp_path) -> None:
    with pytest.raises(BundleError, match="do not match"):
        save_bundle(_model(), _card(bands=("blue", "green", "red", "nir")), tmp_path / "b")
    assert not (tmp_path / "b" / "card.json").exists()


def test_unknown_bundle_name_lists_packaged(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bundle_mod, "weights_dir", lambda: tmp_path)
    save_bundle(_model(), _card(name="coastal-rgb"), tmp_path / "coastal-rgb")
    assert packaged_bundles() == ["coastal-rgb"]
    with pytest.raises(ModelNotFoundError, match="packaged bundles: coastal-rgb"):
        load_bundle("coastal-rbg")
    assert load_bundle("coastal-rgb").card.name == "coastal-rgb"
    assert read_card(tmp_path / "coastal-rgb" / "card.json").metrics["mean_iou"] == 0.5


def test_models_command_lists_architectures_and_bundles(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bundle_mod, "weights_dir", lambda: tmp_path)
    save_bundle(_model(), _card(name="coastal-rgb"), tmp_path / "coastal-rgb")
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    assert "resunet" in result.output and "deeplabv3plus" in result.output
    assert "coastal-rgb  resunet on 3 bands: red, green, blue" in result.output
    assert "mIoU: reported 0.500" in result.output
    data = json.loads(CliRunner().invoke(main, ["models", "--json"]).output)
    assert data["bundles"][0]["tile_size"] == 512


def test_mean_iou_is_found_in_metric_groups() -> None:
    from eoseg.cli.models import mean_iou

    assert mean_iou(_card(metrics={"validation": {"mean_iou": 0.71, "dice": 0.8}})) == 0.71
    assert mean_iou(_card(metrics={})) is None


# ---------------------------------------------------------------- ensembles


def _predict(models, scene, out):
    import numpy as np
    import rasterio

    from eoseg.predict import Predictor, PredictSettings

    result = Predictor(models, PredictSettings(precision="fp32", probabilities=True)).predict(scene, out,
                                                                                              progress=False)
    with rasterio.open(result.outputs["classes"]) as c, rasterio.open(result.outputs["probabilities"]) as p:
        return c.read(1), p.read().astype(np.int16)


def test_ensemble_bundle_predicts_what_the_members_predict_together(s2_scene, bundle_factory, tmp_path):
    from eoseg.bundle import ensemble_bundle

    a = bundle_factory(tmp_path / "a", seed=1, name="seed-1")
    b = bundle_factory(tmp_path / "b", seed=2, name="seed-2")
    path = ensemble_bundle([a, b], tmp_path / "ens", name="pair")
    card = read_card(path / "card.json")
    assert (card.arch, card.arch_params["arch"], card.arch_params["members"]) == ("ensemble", "resunet", 2)
    assert [m["name"] for m in card.training["members"]] == ["seed-1", "seed-2"]
    assert [m["sha256"] for m in card.training["members"]] == [load_bundle(a).sha256, load_bundle(b).sha256]
    assert card.bands == load_bundle(a).card.bands and card.standardization == load_bundle(a).card.standardization

    together, p_together = _predict([a, b], s2_scene, tmp_path / "together")
    bundled, p_bundled = _predict(path, s2_scene, tmp_path / "bundled")
    alone, _ = _predict(a, s2_scene, tmp_path / "alone")
    assert (bundled == together).mean() > 0.999
    assert abs(p_bundled - p_together).max() <= 1  # uint8 probabilities: rounding only
    assert (bundled != alone).any()  # the second member changes the map


def test_ensemble_bundle_refuses_members_that_do_not_fit(bundle_factory, tmp_path):
    from eoseg.bundle import ensemble_bundle

    a = bundle_factory(tmp_path / "a", seed=1)
    with pytest.raises(BundleError, match="bands, classes or standardization"):
        ensemble_bundle([a, bundle_factory(tmp_path / "rgb", bands=("red", "green", "blue"))], tmp_path / "e1",
                        name="x")
    with pytest.raises(BundleError, match="other parameters"):
        ensemble_bundle([a, bundle_factory(tmp_path / "wide", filters=8)], tmp_path / "e2", name="x")
    with pytest.raises(ConfigError, match="at least two"):
        ensemble_bundle([a], tmp_path / "e3", name="x")
    assert not any((tmp_path / e).exists() for e in ("e1", "e2", "e3"))
    ensemble_bundle([a, a], tmp_path / "e4", name="x")
    with pytest.raises(OutputExistsError):
        ensemble_bundle([a, a], tmp_path / "e4", name="x")
