"""The model registry and the smp wrappers (offline: random encoders or local weight files)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from eoseg.errors import ConfigError, ModelNotFoundError, TileSizeError  # noqa: E402
from eoseg.models import (  # noqa: E402
    available_models,
    build_model,
    describe_models,
    input_multiple,
    model_parameters,
)

SMP_ARCHS = ["smp-unet", "unetplusplus", "linknet", "fpn", "deeplabv3plus", "pspnet", "manet"]


def test_names_and_descriptions() -> None:
    names = available_models()
    assert {"resunet", "unet", "ensemble", *SMP_ARCHS} == set(names)
    described = describe_models()
    assert [n for n, _ in described] == names
    assert all(desc and "\n" not in desc for _, desc in described)
    assert input_multiple("resunet") == input_multiple("unet") == 16
    assert all(input_multiple(n) == 32 for n in SMP_ARCHS)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        build_model("segformer-xl", 3, 4)
    msg = str(info.value)
    assert msg.startswith("segformer-xl: unknown model 'segformer-xl'.")
    assert all(name in msg for name in available_models())
    assert isinstance(info.value, KeyError)
    with pytest.raises(ModelNotFoundError):
        input_multiple("nope")


def test_unknown_parameter_names_it_and_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("resunet", 3, 4, filter=16)
    msg = str(info.value)
    assert "'filter'" in msg and "filters" in msg and "kernel_size" in msg
    with pytest.raises(ConfigError, match="decoder_channels"):
        build_model("fpn", 3, 4, decoder_channels=(16,))  # an smp-unet parameter, not FPN's
    assert "encoder_name" in model_parameters("fpn") and model_parameters("fpn")["encoder_weights"] is None
    assert model_parameters("resunet")["kernel_size"] == 7


@pytest.mark.parametrize("arch", SMP_ARCHS)
@pytest.mark.parametrize("in_channels", [3, 5])
def test_smp_forward_shape(arch: str, in_channels: int) -> None:
    model = build_model(arch, in_channels, 4, encoder_name="resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, 64, 64))
    assert out.shape == (1, 4, 64, 64)


def test_smp_non_multiple_input_raises() -> None:
    model = build_model("fpn", 3, 4, encoder_name="resnet18").eval()
    with pytest.raises(TileSizeError, match=r"pad to \(96, 64\) divisible by 32"):
        model(torch.randn(1, 3, 80, 64))


def test_imagenet_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("smp-unet", 3, 4, encoder_name="resnet18", encoder_weights="imagenet")
    msg = str(info.value)
    assert "'imagenet'" in msg and "download" in msg and ".pth" in msg and ".safetensors" in msg


def test_missing_weights_file_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_model("linknet", 3, 4, encoder_name="resnet18", encoder_weights=tmp_path / "enc.pth")


def test_unknown_encoder_is_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown encoder 'resnet19'"):
        build_model("fpn", 3, 4, encoder_name="resnet19")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_encoder_weights_are_loaded(tmp_path, suffix: str) -> None:
    source = build_model("linknet", 3, 4, encoder_name="resnet18")
    state = {k: v.contiguous() for k, v in source.encoder.state_dict().items()}
    path = tmp_path / f"encoder{suffix}"
    torch.save(state, path) if suffix == ".pth" else save_file(state, path)
    model = build_model("fpn", 3, 4, encoder_name="resnet18", encoder_weights=str(path))
    for key in ("conv1.weight", "layer4.1.conv2.weight", "bn1.running_mean"):
        assert torch.equal(model.encoder.state_dict()[key], state[key])


def test_local_encoder_weights_adapt_band_count(tmp_path) -> None:
    source = build_model("smp-unet", 3, 4, encoder_name="resnet18")
    path = tmp_path / "encoder.pth"
    torch.save(source.encoder.state_dict(), path)
    model = build_model("smp-unet", 5, 4, encoder_name="resnet18", encoder_weights=path)
    rgb, got = source.encoder.conv1.weight, model.encoder.conv1.weight
    assert got.shape == (64, 5, 7, 7)
    expected = rgb[:, [0, 1, 2, 0, 1]] * (3 / 5)
    assert torch.allclose(got, expected)
    assert torch.equal(model.encoder.layer1[0].conv1.weight, source.encoder.layer1[0].conv1.weight)


def test_partial_encoder_weights_log_missing_keys(tmp_path, caplog) -> None:
    source = build_model("linknet", 3, 4, encoder_name="resnet18")
    state = {k: v for k, v in source.encoder.state_dict().items() if not k.startswith("layer4")}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level("WARNING", logger="eoseg.models.smp"):
        model = build_model("linknet", 3, 4, encoder_name="resnet18", encoder_weights=path)
    assert "left random: layer4" in caplog.text and "extra.weight" in caplog.text
    assert torch.equal(model.encoder.conv1.weight, source.encoder.conv1.weight)
