import pytest
import torch

from eoseg.device import autocast_dtype, cpu_supports_bf16, resolve_device, resolve_precision
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
