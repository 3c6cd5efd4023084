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

import numpy as np
import torch

from eoseg.classes import NODATA_CLASS
from eoseg.grid import Tile, TileGrid

# on_rows(row_off, classes uint8 (n, W), probs (K, n, W) float32 or uint8, or None)
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


def first_argmax(probs: torch.Tensor) -> torch.Tensor:
    """``argmax`` over the class axis of (K, h, w) as ``uint8``, the first class winning ties (as numpy's).

    A pass per class: ``torch.argmax(dim=0)`` reduces over the outer axis with a strided kernel that is ~20×
    slower on the CPU than these K element-wise passes.
    """
    best = probs[0].clone()
    classes = torch.zeros(best.shape, dtype=torch.uint8, device=probs.device)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        torch.maximum(best, probs[k], out=best)
        classes.masked_fill_(better, k)
    return classes


class StripAccumulator:
    """Sums weighted probabilities in a strip ``grid.size`` rows tall and emits finished rows.

    The strip lives on ``device`` (torch tensors), so on a GPU the blending runs where the probabilities are
    and only the finished rows' ``uint8`` classes (and, when asked, probabilities) are copied back; the same
    code blends on the CPU. ``probabilities``: ``None`` (classes only), ``"float32"`` (normalized, 0 where no
    data) or ``"uint8"`` (× 255 rounded half to even, as the probability COG stores them).
    """

    def __init__(self, grid: TileGrid, num_classes: int, on_rows: RowSink, *,
                 device: torch.device | str = "cpu", probabilities: str | None = None):
        self.grid, self.num_classes, self.on_rows = grid, num_classes, on_rows
        self.probabilities = probabilities
        if self.probabilities not in (None, "float32", "uint8"):
            raise ValueError(f"probabilities must be None, 'float32' or 'uint8', not {self.probabilities!r}")
        self.device = torch.device(device)
        cap = min(self.grid.size, self.grid.height)
        width = self.grid.width
        self._base = 0  # scene row of the strip's first row
        self._probs = torch.zeros((self.num_classes, cap, width), dtype=torch.float32, device=self.device)
        self._weight = torch.zeros((cap, width), dtype=torch.float32, device=self.device)
        self._valid = torch.zeros((cap, width), dtype=torch.bool, device=self.device)
        self._weights: dict[tuple[bytes, bytes], torch.Tensor] = {}
        self._axes: dict[tuple[str, int, int], np.ndarray] = {}  # 1-D weights per tile row / column (small)
        self._row = 0  # the tile row being added (see add_in_order)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self._probs, self._weight, self._valid))

    def add(self, tile: Tile, probs: np.ndarray | torch.Tensor, valid: np.ndarray | torch.Tensor) -> None:
        """Add one tile's probabilities (K, H, W) and validity (H, W) (padding is cropped here)."""
        h, w = tile.height, tile.width
        r0 = tile.row_off - self._base
        if r0 < 0 or r0 + h > self._weight.shape[0]:
            raise ValueError(f"tile {tile.id} lies outside the open strip; add tiles row by row")
        rows, cols = slice(r0, r0 + h), slice(tile.col_off, tile.col_off + w)
        weight = self._window(tile)
        probs = torch.as_tensor(probs, device=self.device)
        valid = torch.as_tensor(valid, device=self.device)
        self._probs[:, rows, cols] += probs[:, :h, :w] * weight  # product, then sum: no fused multiply-add
        self._weight[rows, cols] += weight
        self._valid[rows, cols] |= valid[:h, :w]

    def add_in_order(self, tile: Tile, probs: np.ndarray | torch.Tensor, valid: np.ndarray | torch.Tensor) -> None:
        """:meth:`add` for tiles arriving in grid order, tile rows skipped or not: the rows above a new tile
        row are emitted first, one tile row at a time."""
        self.advance_to(tile.row)
        self.add(tile, probs, valid)

    def advance_to(self, row: int) -> None:
        """Emit every scene row above tile row ``row`` (the tile rows before it are complete)."""
        while self._row < row:
            self._row += 1
            self.flush_until(self.grid.row_offsets[self._row])

    def _window(self, tile: Tile) -> torch.Tensor:
        """The tile's blending window, shared by every tile with the same 1-D weights (interior tiles all have
        the same window; edge and pulled-back tiles a few more), so the cache does not grow with the scene."""
        rows = self._axis("row", self.grid.row_offsets, tile.row, tile.height)
        cols = self._axis("col", self.grid.col_offsets, tile.col, tile.width)
        key = (rows.tobytes(), cols.tobytes())
        if key not in self._weights:
            self._weights[key] = torch.from_numpy(np.outer(rows, cols)).to(self.device)
        return self._weights[key]

    def _axis(self, axis: str, offsets: list[int], index: int, length: int) -> np.ndarray:
        key = (axis, index, length)
        if key not in self._axes:
            self._axes[key] = _axis_weights(offsets, index, length)
        return self._axes[key]

    def flush_until(self, scene_row: int) -> None:
        """Emit every row above ``scene_row`` (they receive no more tiles) and move the strip down."""
        n = min(scene_row, self.grid.height) - self._base
        if n <= 0:
            return
        weight = self._weight[:n]
        covered = (weight > 0) & self._valid[:n]
        probs = self._probs[:, :n]  # normalized in place: these rows leave the strip right after
        probs.div_(weight.clamp_min(1e-12))
        classes = first_argmax(probs)
        classes[~covered] = NODATA_CLASS
        out = None
        if self.probabilities is not None:
            probs[:, ~covered] = 0.0
            out = probs if self.probabilities == "float32" else probs.mul(255).round_().clamp_(0, 255).to(torch.uint8)
            if out.device.type == "cpu" and out.dtype == torch.float32:
                out = out.clone()  # a view of the strip, which moves on
        self.on_rows(self._base, classes.cpu().numpy(), None if out is None else out.cpu().numpy())
        self._shift(n)

    def _shift(self, n: int) -> None:
        """Move the strip up by ``n`` rows in place: chunks of at most ``n`` rows, top first, so no chunk's
        source overlaps its destination and no strip-sized temporary is made."""
        for buf in (self._probs, self._weight, self._valid):
            rows = buf.shape[-2]
            for r0 in range(0, rows - n, n):
                r1 = min(r0 + n, rows - n)
                buf[..., r0:r1, :] = buf[..., r0 + n:r1 + n, :]
            buf[..., max(rows - n, 0):, :] = 0
        self._base += n

    def finish(self) -> None:
        self.advance_to(len(self.grid.row_offsets) - 1)
        self.flush_until(self.grid.height)
