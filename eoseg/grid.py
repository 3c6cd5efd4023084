"""Tile grids: pure geometry, no I/O.

A :class:`Tile` is a value: its window in the scene, its affine transform and CRS, and the padding
needed when the scene is smaller than a tile. Tiles start every ``size - overlap`` pixels; the last
row and column are pulled back inside the scene (so they overlap their neighbour by more than
``overlap``) instead of being padded. Only a scene smaller than one tile along an axis is padded
(up to the next multiple of 32 px; marked invalid, so the standardization fills it like nodata from the
nearest valid pixel; removed before anything is written).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from eoseg.errors import TileSizeError

MODEL_MULTIPLE = 32  # tile sizes and padded model inputs are multiples of this (the only definition)


@dataclass(frozen=True)
class Tile:
    """One tile: ``window`` in scene pixels, padded by ``pad_bottom`` / ``pad_right`` to ``size``."""

    row: int
    col: int
    window: Window
    transform: Affine
    crs: CRS | None
    size: tuple[int, int]  # (height, width) fed to the model
    pad_bottom: int = 0
    pad_right: int = 0

    @property
    def id(self) -> str:
        return f"r{self.row:03d}_c{self.col:03d}"

    @property
    def row_off(self) -> int:
        return int(self.window.row_off)

    @property
    def col_off(self) -> int:
        return int(self.window.col_off)

    @property
    def height(self) -> int:
        return int(self.window.height)

    @property
    def width(self) -> int:
        return int(self.window.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the tile's window (without padding) in CRS units."""
        return array_bounds(self.height, self.width, self.transform)


def axis_offsets(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets along one axis: every ``size - overlap``, the last pulled back to ``length - size``."""
    if length <= size:
        return [0]
    stride = size - overlap
    offsets = list(range(0, length - size, stride))
    offsets.append(length - size)
    return offsets


def check_tile_size(size: int, overlap: int) -> None:
    if size <= 0 or size % MODEL_MULTIPLE:
        raise TileSizeError(
            f"tile size {size} is not a positive multiple of {MODEL_MULTIPLE}",
            path="--tile-size",
            fix=f"use a multiple of {MODEL_MULTIPLE}, e.g. {max(1, round(size / MODEL_MULTIPLE)) * MODEL_MULTIPLE}",
        )
    if overlap < 0 or overlap >= size // 2 + 1:
        raise TileSizeError(
            f"overlap {overlap} must be between 0 and half the tile size ({size // 2})",
            path="--overlap",
            fix=f"use e.g. --overlap {size // 8}",
        )


def fit_tile(height: int, width: int, size: int, overlap: int) -> tuple[int, int]:
    """The tile size and overlap for a scene: ``size`` unless the scene's short side is smaller, in which case
    the short side rounded up to :data:`MODEL_MULTIPLE` (overlap scaled alike).

    A tile much larger than the scene would be mostly padding: a filled margin that no training tile looked
    like (a 140 px wide Landsat strip in a 512 px tile would be 73 % padding).
    """
    short = min(height, width)
    if short >= size:
        return size, overlap
    fitted = max(MODEL_MULTIPLE, -(-short // MODEL_MULTIPLE) * MODEL_MULTIPLE)
    return fitted, min(overlap * fitted // size, fitted // 2)


def padded_length(length: int, size: int) -> int:
    """Model input length along an axis: ``size``, or for a short axis the next multiple of 32."""
    if length >= size:
        return size
    return max(MODEL_MULTIPLE, -(-length // MODEL_MULTIPLE) * MODEL_MULTIPLE)


@dataclass(frozen=True)
class TileGrid:
    """All tiles over a ``height`` × ``width`` scene, in row-major order."""

    height: int
    width: int
    size: int
    overlap: int
    transform: Affine = field(default_factory=Affine.identity)
    crs: CRS | None = None

    def __post_init__(self) -> None:
        check_tile_size(self.size, self.overlap)

    @property
    def row_offsets(self) -> list[int]:
        return axis_offsets(self.height, self.size, self.overlap)

    @property
    def col_offsets(self) -> list[int]:
        return axis_offsets(self.width, self.size, self.overlap)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row_offsets), len(self.col_offsets)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def tile(self, row: int, col: int) -> Tile:
        r0, c0 = self.row_offsets[row], self.col_offsets[col]
        h, w = min(self.size, self.height), min(self.size, self.width)
        window = Window(c0, r0, w, h)
        ph, pw = padded_length(self.height, self.size), padded_length(self.width, self.size)
        return Tile(
            row=row, col=col, window=window, transform=window_transform(window, self.transform), crs=self.crs,
            size=(ph, pw), pad_bottom=ph - h, pad_right=pw - w,
        )

    def row_tiles(self, row: int) -> list[Tile]:
        return [self.tile(row, c) for c in range(len(self.col_offsets))]

    def __iter__(self) -> Iterator[Tile]:
        for r in range(len(self.row_offsets)):
            yield from self.row_tiles(r)
