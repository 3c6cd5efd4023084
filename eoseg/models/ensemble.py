"""Several trained models of one architecture as one: the mean of their class probabilities.

Seeds of one recipe disagree where the training labels leave a choice open (the same marsh island is land for
one seed, water for another); averaging their probabilities keeps what they agree on. The module returns
``log(mean_i softmax(member_i(x)))``, so the softmax every consumer applies to a model's output gives the mean
probabilities exactly, as ``eoseg predict --model a --model b`` computes them. Bundles of this kind are made
by :func:`eoseg.bundle.ensemble_bundle` (``eoseg ensemble``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from eoseg.errors import ConfigError


class Ensemble(nn.Module):
    """``members`` models of architecture ``arch`` with ``params``; outputs log mean class probabilities."""

    def __init__(self, in_channels: int, num_classes: int, arch: str = "resunet", params: dict | None = None,
                 members: int = 2):
        super().__init__()
        from eoseg.models import build_model

        if arch == "ensemble":
            raise ConfigError("an ensemble's members cannot be ensembles", path="arch",
                              fix="list the member models themselves")
        if not isinstance(members, int) or members < 1:
            raise ConfigError(f"invalid members={members!r}", path="members", fix="use a positive integer")
        self.members = nn.ModuleList(
            build_model(arch, in_channels=in_channels, num_classes=num_classes, **(params or {}))
            for _ in range(members)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
