"""Stitching tiles: the blending window and the streaming accumulator.

Each tile's class probabilities are weighted by a window that is 1 in the tile's interior and ramps
linearly towards a tile edge only where that edge overlaps a neighbouring tile, never at the scene
border; the windows of all tiles sum to 1 at every pixel. Weighted probabilities and weights are summed
in a rolling strip one tile tall; once a tile row is done, every scene row above the next tile row is
final, so those rows are normalized, turned into classes and handed to a sink, and the strip moves down.
Peak memory depends on the scene width and the tile size, not on the scene height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eoseg.classes import NODATA_CLASS
from eoseg.grid import Tile, TileGrid

# on_rows(row_off, classes uint8 (n, W), probs float32 (K, n, W) or None)
RowSink = Callable[[int, np.ndarray, "np.ndarray | None"], None]


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    """1-D weights: rising over ``before`` pixels, 1 inside, falling over ``after`` pixels; never 0."""
    w = np.ones(length, dtype=np.float32)
    if before > 0:
        w[:before] = np.arange(1, before + 1, dtype=np.float32) / (before + 1)
    if after > 0:
        w[length - after:] = np.minimum(w[length - after:], np.arange(after, 0, -1, dtype=np.float32) / (after + 1))
    return w


def _overlaps(offsets: list[int], index: int, length: int) -> tuple[int, int]:
    """Overlap of tile ``index`` with its previous and next neighbour along one axis."""
    before = offsets[index - 1] + length - offsets[index] if index > 0 else 0
    after = offsets[index] + length - offsets[index + 1] if index + 1 < len(offsets) else 0
    return max(0, min(before, length)), max(0, min(after, length))


def _axis_weights(offsets: list[int], index: int, length: int) -> np.ndarray:
    """1-D weights of tile ``index`` along one axis, divided by the sum of every tile's ramp there.

    Where two tiles overlap by the same amount on both sides, the ramps already sum to 1; a last tile pulled
    back inside the scene can overlap two predecessors at once, and the division keeps the weights of all
    tiles summing to exactly 1 at every pixel (a partition of unity) there too.
    """
    start = offsets[index]
    total = np.zeros(length, dtype=np.float32)
    for j, off in enumerate(offsets):
        lo, hi = max(off, start), min(off, start) + length
        if lo < hi:
            total[lo - start:hi - start] += _ramp(length, *_overlaps(offsets, j, length))[lo - off:hi - off]
    return _ramp(length, *_overlaps(offsets, index, length)) / total


def blend_weights(grid: TileGrid, tile: Tile) -> np.ndarray:
    """The (h, w) blending window of ``tile``: tapered only inside overlaps with neighbours; the windows of
    all tiles sum to 1 at every pixel of the scene."""
    return np.outer(_axis_weights(grid.row_offsets, tile.row, tile.height),
                    _axis_weights(grid.col_offsets, tile.col, tile.width))


@dataclass
class StripAccumulator:
    """Sums weighted probabilities in a strip ``grid.size`` rows tall and emits finished rows."""

    grid: TileGrid
    num_classes: int
    on_rows: RowSink
    keep_probabilities: bool = False

    def __post_init__(self) -> None:
        cap = min(self.grid.size, self.grid.height)
        width = self.grid.width
        self._base = 0  # scene row of the strip's first row
        self._probs = np.zeros((self.num_classes, cap, width), dtype=np.float32)
        self._weight = np.zeros((cap, width), dtype=np.float32)
        self._valid = np.zeros((cap, width), dtype=bool)
        self._weights: dict[tuple[int, int], np.ndarray] = {}

    @property
    def nbytes(self) -> int:
        return self._probs.nbytes + self._weight.nbytes + self._valid.nbytes

    def add(self, tile: Tile, probs: np.ndarray, valid: np.ndarray) -> None:
        """Add one tile's probabilities (K, H, W) and validity (H, W) (padding is cropped here)."""
        h, w = tile.height, tile.width
        r0 = tile.row_off - self._base
        if r0 < 0 or r0 + h > self._weight.shape[0]:
            raise ValueError(f"tile {tile.id} lies outside the open strip; add tiles row by row")
        rows, cols = slice(r0, r0 + h), slice(tile.col_off, tile.col_off + w)
        weight = self._window(tile)
        self._probs[:, rows, cols] += probs[:, :h, :w] * weight
        self._weight[rows, cols] += weight
        self._valid[rows, cols] |= valid[:h, :w]

    def _window(self, tile: Tile) -> np.ndarray:
        key = (tile.row, tile.col)
        if key not in self._weights:
            if len(self._weights) > 4 * len(self.grid.col_offsets):
                self._weights.clear()
            self._weights[key] = blend_weights(self.grid, tile)
        return self._weights[key]

    def flush_until(self, scene_row: int) -> None:
        """Emit every row above ``scene_row`` (they receive no more tiles) and move the strip down."""
        n = min(scene_row, self.grid.height) - self._base
        if n <= 0:
            return
        weight = self._weight[:n]
        covered = (weight > 0) & self._valid[:n]
        probs = self._probs[:, :n]  # normalized in place: these rows leave the strip right after
        np.divide(probs, np.maximum(weight, 1e-12), out=probs)
        classes = np.argmax(probs, axis=0).astype(np.uint8)
        classes[~covered] = NODATA_CLASS
        if self.keep_probabilities:
            probs[:, ~covered] = 0.0
        self.on_rows(self._base, classes, probs if self.keep_probabilities else None)
        self._shift(n)

    def _shift(self, n: int) -> None:
        for buf in (self._probs[:], self._weight, self._valid):
            tail = buf[..., n:, :].copy()
            buf[..., : tail.shape[-2], :] = tail
            buf[..., tail.shape[-2]:, :] = 0
        self._base += n

    def finish(self) -> None:
        self.flush_until(self.grid.height)
