"""Segmentation Gym architectures (resunet, unet): shapes, input checks, gradients, dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eoseg.errors import ConfigError, TileSizeError
from eoseg.models import build_model
from eoseg.models.resunet import ResUNet
from eoseg.models.unet import UNet


@pytest.mark.parametrize("name", ["resunet", "unet"])
@pytest.mark.parametrize("in_channels", [3, 5])
def test_forward_shape(name: str, in_channels: int) -> None:
    model = build_model(name, in_channels, 4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, 64, 64))
    assert out.shape == (1, 4, 64, 64)
    assert out.dtype == torch.float32


def test_input_multiple_is_16() -> None:
    assert ResUNet.input_multiple == UNet.input_multiple == 16
    model = build_model("resunet", 3, 4, filters=2, kernel_size=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 80)).shape == (1, 4, 48, 80)


@pytest.mark.parametrize("name", ["resunet", "unet"])
def test_non_multiple_input_raises(name: str) -> None:
    model = build_model(name, 3, 4, filters=2, kernel_size=3)
    with pytest.raises(TileSizeError) as info:
        model(torch.randn(1, 3, 70, 64))
    msg = str(info.value)
    assert "input of 70×64 is not divisible by 16" in msg
    assert "pad to (96, 64) divisible by 32" in msg
    assert "\n" not in msg and msg.startswith(f"{name}: ")


def test_parameter_counts_at_defaults() -> None:
    # Pinned: a change here breaks every saved bundle of these architectures.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("resunet", 3, 4)) == 6_190_756
    assert count(build_model("unet", 3, 4)) == 6_140_860


def test_resunet_gradient_flows() -> None:
    model = build_model("resunet", 3, 4, filters=4, kernel_size=3)
    x = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 4, (2, 32, 32))
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.stem.conv1[0].weight.grad.abs().sum() > 0


def _dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout | nn.Dropout2d)]


def test_dropout_parameters_shape_the_module() -> None:
    small = {"filters": 2, "kernel_size": 3}
    assert len(_dropouts(build_model("resunet", 3, 4, **small))) == 5  # 4 levels + bottleneck
    assert len(_dropouts(build_model("resunet", 3, 4, dropout=0.0, **small))) == 0
    assert len(_dropouts(build_model("resunet", 3, 4, use_dropout_on_upsampling=True, **small))) == 9
    spatial = _dropouts(build_model("unet", 3, 4, dropout_type="spatial", **small))
    assert spatial and all(isinstance(m, nn.Dropout2d) for m in spatial)
    growing = build_model("resunet", 3, 4, dropout=0.1, dropout_change_per_layer=0.1, **small)
    assert [round(level.drop.p, 2) for level in growing.down] == [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize(
    "params", [{"kernel_size": 4}, {"dropout_type": "gaussian"}, {"stride": 3}, {"dropout": 1.0}, {"filters": 0}]
)
def test_bad_parameters_raise_config_error(params: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(params))):
        build_model("resunet", 3, 4, **params)


def test_spectral_indices_undo_the_z_score_and_bound_the_ratio():
    """The index channels are (a − b) / (a + b) of the reflectance behind the z-scored input, within [−1, 1],
    and the buffers holding the z-score travel with the weights."""
    from eoseg.models.unet import SpectralIndices, set_input_statistics

    model = build_model("resunet", 3, 4, filters=4, kernel_size=3, indices=[[0, 1], [2, 1]])
    mean, std = [0.05, 0.2, 0.1], [0.02, 0.1, 0.05]
    assert set_input_statistics(model, mean, std)
    refl = torch.tensor([[0.08, 0.02, 0.30], [0.0, 0.0, -0.05]]).T.reshape(1, 3, 2, 1).expand(1, 3, 2, 16)
    x = (refl - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = model.indices(x)
    assert out.shape == (1, 5, 2, 16) and torch.equal(out[:, :3], x)
    assert out[0, 3, 0, 0].item() == pytest.approx((0.08 - 0.02) / 0.10, abs=1e-5)
    assert out[0, 4, 0, 0].item() == pytest.approx((0.30 - 0.02) / 0.32, abs=1e-5)
    assert out[0, 3:, 1].abs().max() <= 1.0  # a + b ≤ 0: bounded, not infinite
    assert {"indices.mean", "indices.std"} <= set(model.state_dict())
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)
    assert not set_input_statistics(build_model("resunet", 3, 4, filters=4), mean, std)
    with pytest.raises(ConfigError, match="index band pair"):
        SpectralIndices(3, [[0, 3]])
