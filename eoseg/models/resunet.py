"""Segmentation Gym's custom Res-UNet in PyTorch.

The U-shape of :mod:`eoseg.models.unet` (stem, four strided levels, bottleneck, upsampling decoder,
1×1 head) with residual blocks: conv-BN-ReLU, dropout, conv-BN, plus a shortcut (identity, or a
strided 1×1 conv + BN when channels or stride change), then ReLU. Input H, W multiples of 16.
"""

from __future__ import annotations

import torch
from torch import nn

from eoseg.models.unet import GymUNetBase, conv_bn_relu, dropout_layer


class ResBlock(nn.Module):
    """Residual block with a projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, dropout: float, dropout_type: str):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = conv_bn_relu(cin, cout, kernel_size, stride)
        self.drop = dropout_layer(dropout, dropout_type)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, kernel_size, padding=pad, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.drop(self.conv1(x))) + self.shortcut(x))


class ResUNet(GymUNetBase):
    """Gym's custom Res-UNet: residual blocks in stem, encoder and decoder."""

    name = "resunet"

    @staticmethod
    def make_block(cin: int, cout: int, kernel_size: int, stride: int, dropout: float,
                   dropout_type: str) -> nn.Module:
        return ResBlock(cin, cout, kernel_size, stride, dropout, dropout_type)
