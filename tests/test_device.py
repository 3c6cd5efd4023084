import pytest
import torch

from eoseg.device import autocast_dtype, cpu_supports_bf16, cuda_supports_bf16, resolve_device, resolve_precision
from eoseg.errors import ConfigError

CPU = torch.device("cpu")


def test_auto_precision_on_cpu_follows_native_bf16_support():
    assert resolve_precision("auto", CPU) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32" and autocast_dtype("fp32") is None
    assert autocast_dtype(resolve_precision("bf16", CPU)) == torch.bfloat16


def test_fp16_on_cpu_and_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="one of"):
        resolve_precision("fp8", CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_a_device_is_a_clear_error():
    assert resolve_device("auto") == CPU
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")


@pytest.mark.gpu
def test_auto_picks_cuda_with_half_precision():
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert resolve_precision("auto", device) in ("bf16", "fp16")


class _FakeCudaDevice:
    """Stands in for ``torch.cuda.device``: makes ``index`` the current device inside the block."""

    current = 0

    def __init__(self, device):
        self.index = torch.device(device).index or 0

    def __enter__(self):
        self.previous, _FakeCudaDevice.current = _FakeCudaDevice.current, self.index

    def __exit__(self, *exc):
        _FakeCudaDevice.current = self.previous


def test_cuda_bf16_only_where_the_target_device_has_it_natively(monkeypatch):
    """cuda:0 a T4 (bf16 only emulated), cuda:1 an A100 (native): each device is asked, emulation not counted."""
    native, asked = {0: False, 1: True}, []

    def is_bf16_supported(including_emulation=True):
        asked.append((_FakeCudaDevice.current, including_emulation))
        return native[_FakeCudaDevice.current] or including_emulation

    monkeypatch.setattr(torch.cuda, "device", _FakeCudaDevice)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp16"
    assert resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert asked == [(0, False), (1, False)]
    assert resolve_precision("bf16", torch.device("cuda:0")) == "bf16"  # asked for explicitly: as asked


def test_cuda_bf16_without_the_emulation_argument_uses_the_capability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", _FakeCudaDevice)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # an older torch: emulation counted
    monkeypatch.setattr(torch.version, "hip", None)
    capability = {0: (7, 5), 1: (8, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: capability[torch.device(d).index or 0])
    assert cuda_supports_bf16(torch.device("cuda:0")) is False
    assert cuda_supports_bf16(torch.device("cuda:1")) is True
