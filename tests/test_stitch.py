"""Tiling and stitching are exact for a per-pixel model, and memory does not grow with scene height."""

import numpy as np
import pytest
import torch

from eoseg.classes import NODATA_CLASS
from eoseg.grid import Tile, TileGrid
from eoseg.predict import Forward, run_tiles
from eoseg.stitch import StripAccumulator, blend_weights


def array_reader(data: np.ndarray, valid: np.ndarray):
    def read(tile: Tile):
        r, c, h, w = tile.row_off, tile.col_off, tile.height, tile.width
        x = data[:, r:r + h, c:c + w]
        v = valid[r:r + h, c:c + w]
        pads = ((0, 0), (0, tile.pad_bottom), (0, tile.pad_right))
        return np.pad(x, pads, mode="reflect"), np.pad(v, pads[1:], constant_values=False)

    return read


def per_pixel_model(channels: int, classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(channels, classes, kernel_size=1)


def stitched(data, valid, size, overlap, model, batch_size=3):
    h, w = valid.shape
    grid = TileGrid(h, w, size, overlap)
    k = model.out_channels
    classes = np.full((h, w), 77, np.uint8)
    probs = np.full((k, h, w), -1.0, np.float32)
    rows_seen = []

    def on_rows(r0, cls, p):
        rows_seen.append((r0, cls.shape[0]))
        classes[r0:r0 + cls.shape[0]] = cls
        probs[:, r0:r0 + cls.shape[0]] = p

    forward = Forward([model], torch.device("cpu"), "fp32")
    counts = run_tiles(grid, array_reader(data, valid), forward, k, on_rows, batch_size=batch_size,
                       keep_probabilities=True)
    return classes, probs, rows_seen, counts


@pytest.mark.parametrize("seed", range(6))
def test_tiled_equals_untiled_for_per_pixel_model(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(20, 300)), int(rng.integers(20, 300))
    size = int(rng.choice([32, 64, 96, 128]))
    overlap = int(rng.integers(0, size // 2 + 1))
    data = rng.normal(size=(3, h, w)).astype(np.float32)
    valid = np.ones((h, w), bool)
    model = per_pixel_model(3, 4, seed)
    classes, probs, rows_seen, _ = stitched(data, valid, size, overlap, model)
    with torch.inference_mode():
        expected = torch.softmax(model(torch.from_numpy(data)[None]), 1)[0].numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(classes, expected.argmax(0))
    # rows arrive in order, exactly once
    assert [r for r, _ in rows_seen] == sorted(r for r, _ in rows_seen)
    assert sum(n for _, n in rows_seen) == h


def test_nodata_pixels_become_255_and_empty_tiles_are_skipped():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(2, 100, 130)).astype(np.float32)
    valid = np.ones((100, 130), bool)
    valid[:, :70] = False  # the left tiles are entirely nodata
    valid[90:, 100:] = False
    classes, _, _, counts = stitched(data, valid, 64, 16, per_pixel_model(2, 4, 0))
    assert (classes[~valid] == NODATA_CLASS).all()
    assert (classes[valid] < 4).all()
    assert counts.skipped >= 2 and counts.total == len(TileGrid(100, 130, 64, 16))


def test_weights_taper_only_inside_overlaps():
    grid = TileGrid(200, 200, 64, 16)
    first = blend_weights(grid, grid.tile(0, 0))
    assert (first[0, :40] == 1).all() and (first[:40, 0] == 1).all()  # scene border: no taper
    assert first[-1, -1] < first[30, 30] == 1  # overlap with neighbours: tapered
    last = blend_weights(grid, grid.tile(grid.shape[0] - 1, grid.shape[1] - 1))
    assert last[-1, -1] == 1 and last[0, 0] < 1
    assert (first > 0).all()


def test_strip_memory_does_not_depend_on_scene_height():
    small = StripAccumulator(TileGrid(512, 1000, 128, 16), 4, lambda *a: None)
    tall = StripAccumulator(TileGrid(16 * 512, 1000, 128, 16), 4, lambda *a: None)
    assert small.nbytes == tall.nbytes
