"""The ensemble architecture: log mean probabilities of its members, no nesting."""

from __future__ import annotations

import pytest
import torch

from eoseg.errors import ConfigError
from eoseg.models import build_model, input_multiple


def test_softmax_of_the_output_is_the_mean_of_the_members_probabilities():
    torch.manual_seed(0)
    model = build_model("ensemble", in_channels=5, num_classes=4, arch="resunet",
                        params={"filters": 4, "kernel_size": 3}, members=3).eval()
    x = torch.randn(2, 5, 64, 64)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in model.members]).mean(0)
        out = model(x)
    assert out.shape == (2, 4, 64, 64)
    torch.testing.assert_close(torch.softmax(out, 1), mean, atol=1e-6, rtol=1e-5)
    # the members were initialised apart: the mean is not any one of them
    assert not torch.allclose(torch.softmax(model.members[0](x), 1), mean, atol=1e-3)
    assert input_multiple("ensemble") % input_multiple("resunet") == 0


@pytest.mark.parametrize("params", [{"arch": "ensemble"}, {"members": 0}, {"params": {"filterz": 4}}])
def test_refuses_nested_empty_or_misparametrised_ensembles(params):
    with pytest.raises(ConfigError):
        build_model("ensemble", in_channels=3, num_classes=4, **params)
