"""Segmentation Gym's custom U-Net in PyTorch, and the skeleton it shares with the Res-UNet.

Layout (as Gym's Keras ``custom_unet`` / ``custom_resunet``): a stem block at full resolution with
``filters`` channels; four strided levels with ``filters`` × 2, 4, 8, 16; a bottleneck of two
conv-BN-ReLU layers at the deepest level; a decoder that upsamples ×2, concatenates the skip of the
same resolution and applies a block (16f, 8f, 4f, 2f channels, as Gym); a 1×1 conv head giving
``num_classes`` logits (no softmax). Dropout sits between the two convolutions of each block, grows
by ``dropout_change_per_layer`` per level, and is used in the decoder only when
``use_dropout_on_upsampling``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from eoseg.errors import ConfigError, TileSizeError
from eoseg.grid import MODEL_MULTIPLE

DROPOUT_TYPES = ("standard", "spatial")
UPSAMPLE_MODES = ("nearest", "bilinear")
LEVELS = 4

BlockFactory = Callable[[int, int, int, int, float, str], nn.Module]


def check_input_size(x: torch.Tensor, multiple: int, name: str) -> None:
    """Raise TileSizeError unless H and W of ``x`` are multiples of ``multiple``."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % multiple or w % multiple:
        up = lambda n: -(-n // MODEL_MULTIPLE) * MODEL_MULTIPLE  # noqa: E731 - tile sizes are multiples of it
        raise TileSizeError(
            f"input of {h}×{w} is not divisible by {multiple}", path=name,
            fix=f"pad to ({up(h)}, {up(w)}) divisible by {MODEL_MULTIPLE}",
        )


def dropout_layer(p: float, kind: str) -> nn.Module:
    """``nn.Dropout`` / ``nn.Dropout2d`` for ``p > 0``, else identity."""
    if p <= 0:
        return nn.Identity()
    return nn.Dropout2d(p) if kind == "spatial" else nn.Dropout(p)


def conv_bn_relu(cin: int, cout: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """conv → BatchNorm → ReLU with 'same' padding (odd kernels)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DoubleConv(nn.Module):
    """Two conv-BN-ReLU layers (the first strided), dropout between them."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, dropout: float, dropout_type: str):
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, kernel_size, stride)
        self.drop = dropout_layer(dropout, dropout_type)
        self.conv2 = conv_bn_relu(cout, cout, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.drop(self.conv1(x)))


class UpBlock(nn.Module):
    """Upsample ×``scale``, concatenate the skip, apply a block."""

    def __init__(self, block: nn.Module, scale: int, mode: str):
        super().__init__()
        self.block = block
        self.scale = scale
        self.mode = mode

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.scale > 1:
            align = False if self.mode == "bilinear" else None
            x = F.interpolate(x, scale_factor=self.scale, mode=self.mode, align_corners=align)
        return self.block(torch.cat([x, skip], dim=1))


class SpectralIndices(nn.Module):
    """Appends normalized differences ``(a − b) / (a + b)`` of input band pairs as extra channels.

    The model's input is reflectance z-scored per band (``reflectance`` standardization); the z-score is undone
    with the statistics held as buffers (saved with the weights; :func:`set_input_statistics` sets them before
    training), so each index is the sensor-independent ratio a per-pixel classifier is given (NDWI from green and
    NIR, MNDWI from green and SWIR1, NDVI from NIR and red, …), bounded to [−1, 1]. ``pairs``: positions
    ``(a, b)`` in the input's band order.
    """

    def __init__(self, in_channels: int, pairs: Sequence[Sequence[int]]):
        super().__init__()
        pairs = [tuple(int(i) for i in pair) for pair in pairs]
        for pair in pairs:
            if len(pair) != 2 or not all(0 <= i < in_channels for i in pair) or pair[0] == pair[1]:
                raise ConfigError(f"invalid index band pair {list(pair)!r}", path="indices",
                                  fix=f"give pairs [a, b] of two different input positions 0..{in_channels - 1}")
        self.a = [a for a, _ in pairs]
        self.b = [b for _, b in pairs]
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = x * self.std + self.mean
        a, b = r[:, self.a], r[:, self.b]
        nd = ((a - b) / (a + b).clamp_min(NDI_FLOOR)).clamp(-1.0, 1.0)
        return torch.cat([x, nd], dim=1)


NDI_FLOOR = 0.01  # reflectance: a + b below it (deep shadow, nodata filled with 0) does not blow the ratio up


def set_input_statistics(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> bool:
    """Give a model's :class:`SpectralIndices` the z-score of its input (True if it has one)."""
    layer = getattr(model, "indices", None)
    if not isinstance(layer, SpectralIndices):
        return False
    layer.mean.copy_(torch.tensor(mean, dtype=torch.float32).view_as(layer.mean))
    layer.std.copy_(torch.tensor(std, dtype=torch.float32).view_as(layer.std))
    return True


def _check_params(filters: int, kernel_size: int, stride: int, dropout: float, change: float,
                  dropout_type: str, upsample: str) -> None:
    def bad(name: str, value: object, fix: str) -> ConfigError:
        return ConfigError(f"invalid {name}={value!r}", path=name, fix=fix)

    if not isinstance(filters, int) or filters < 1:
        raise bad("filters", filters, "use a positive integer, e.g. 8")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise bad("kernel_size", kernel_size, "use an odd positive integer, e.g. 3 or 7")
    if stride not in (1, 2):
        raise bad("stride", stride, "use 2 (Gym's default) or 1")
    top = dropout + (LEVELS - 1) * change
    if not (0 <= dropout < 1 and 0 <= top < 1):
        raise bad("dropout", dropout, "dropout (plus 3 × dropout_change_per_layer) must lie in [0, 1)")
    if dropout_type not in DROPOUT_TYPES:
        raise bad("dropout_type", dropout_type, f"choose one of: {', '.join(DROPOUT_TYPES)}")
    if upsample not in UPSAMPLE_MODES:
        raise bad("upsample", upsample, f"choose one of: {', '.join(UPSAMPLE_MODES)}")


class GymUNetBase(nn.Module):
    """The shared U-shape; subclasses choose the block (``make_block``)."""

    input_multiple = 16
    name = "gym"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        filters: int = 8,
        kernel_size: int = 7,
        stride: int = 2,
        dropout: float = 0.1,
        dropout_change_per_layer: float = 0.0,
        dropout_type: str = "standard",
        use_dropout_on_upsampling: bool = False,
        upsample: str = "nearest",
        indices: Sequence[Sequence[int]] = (),
    ):
        super().__init__()
        _check_params(filters, kernel_size, stride, dropout, dropout_change_per_layer, dropout_type, upsample)
        self.input_multiple = stride**LEVELS
        widths = [filters * 2**i for i in range(LEVELS + 1)]  # f, 2f, 4f, 8f, 16f
        drops = [dropout + i * dropout_change_per_layer for i in range(LEVELS)]
        block = self.make_block
        self.indices = SpectralIndices(in_channels, indices) if indices else None
        self.stem = block(in_channels + len(indices), widths[0], kernel_size, 1, 0.0, dropout_type)
        self.down = nn.ModuleList(
            block(widths[i], widths[i + 1], kernel_size, stride, drops[i], dropout_type) for i in range(LEVELS)
        )
        self.bottleneck = DoubleConv(widths[-1], widths[-1], kernel_size, 1, drops[-1], dropout_type)
        self.up = nn.ModuleList(self._decoder(widths, drops, kernel_size, stride, dropout_type,
                                              use_dropout_on_upsampling, upsample))
        self.head = nn.Conv2d(2 * filters, num_classes, kernel_size=1)
        _init_weights(self)

    def _decoder(self, widths: list[int], drops: list[float], kernel_size: int, stride: int,
                 dropout_type: str, use_dropout: bool, upsample: str) -> list[UpBlock]:
        blocks, cin = [], widths[-1]
        for level in range(LEVELS - 1, -1, -1):  # skips 8f, 4f, 2f, f
            cout = widths[level + 1]  # 16f, 8f, 4f, 2f as Gym
            p = drops[level] if use_dropout else 0.0
            blocks.append(UpBlock(self.make_block(cin + widths[level], cout, kernel_size, 1, p, dropout_type),
                                  stride, upsample))
            cin = cout
        return blocks

    @staticmethod
    def make_block(cin: int, cout: int, kernel_size: int, stride: int, dropout: float,
                   dropout_type: str) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.input_multiple, self.name)
        if self.indices is not None:
            x = self.indices(x)
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = self.bottleneck(skips.pop())
        for up in self.up:
            x = up(x, skips.pop())
        return self.head(x)


def _init_weights(model: nn.Module) -> None:
    """He initialisation for convolutions (ReLU network), unit BatchNorm."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class UNet(GymUNetBase):
    """Gym's custom U-Net: plain double-conv blocks. Input H, W multiples of 16."""

    name = "unet"

    @staticmethod
    def make_block(cin: int, cout: int, kernel_size: int, stride: int, dropout: float,
                   dropout_type: str) -> nn.Module:
        return DoubleConv(cin, cout, kernel_size, stride, dropout, dropout_type)
