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
                       probabilities="float32")
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


def _weight_sum(grid: TileGrid) -> np.ndarray:
    total = np.zeros((grid.height, grid.width), np.float64)
    for tile in grid:
        total[tile.row_off:tile.row_off + tile.height, tile.col_off:tile.col_off + tile.width] += \
            blend_weights(grid, tile)
    return total


@pytest.mark.parametrize("seed", range(12))
def test_blend_weights_are_a_partition_of_unity(seed):
    """The windows of all tiles sum to exactly 1 at every pixel, also where a pulled-back last tile overlaps
    two neighbours at once."""
    rng = np.random.default_rng(seed)
    size = int(rng.choice([32, 64, 96, 128]))
    grid = TileGrid(int(rng.integers(20, 400)), int(rng.integers(20, 400)), size, int(rng.integers(0, size // 2 + 1)))
    np.testing.assert_allclose(_weight_sum(grid), 1.0, atol=1e-6)


def test_partition_of_unity_with_a_last_tile_overlapping_two_neighbours():
    grid = TileGrid(211, 250, 128, 47)
    assert grid.row_offsets == [0, 81, 83]  # rows 83..128 lie in three tiles
    np.testing.assert_allclose(_weight_sum(grid), 1.0, atol=1e-6)
    for tile in grid:
        assert (blend_weights(grid, tile) > 0).all()


class PositionDependent(torch.nn.Module):
    """Per-pixel logits plus a bias that depends on the pixel's position inside the tile: tiled ≠ untiled, so
    where each tile lands and with which weight shows in the result."""

    def __init__(self, channels: int, classes: int, size: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.out_channels = classes
        self.conv = torch.nn.Conv2d(channels, classes, kernel_size=1)
        self.bias = torch.nn.Parameter(3 * torch.randn(1, classes, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.bias[..., :x.shape[-2], :x.shape[-1]]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


@pytest.mark.parametrize(("h", "w", "size", "overlap", "batch"), [(150, 170, 64, 16, 3), (211, 250, 128, 47, 2),
                                                                   (40, 300, 64, 32, 4), (97, 97, 32, 0, 1)])
def test_stitch_is_the_weighted_mean_of_tile_predictions(h, w, size, overlap, batch):
    """Σ wᵢ pᵢ / Σ wᵢ computed tile by tile with plain numpy (float64) matches the streamed result."""
    rng = np.random.default_rng(h)
    data = rng.normal(size=(3, h, w)).astype(np.float32)
    model = PositionDependent(3, 4, size, seed=w)
    _, probs, _, _ = stitched(data, np.ones((h, w), bool), size, overlap, model, batch_size=batch)
    grid = TileGrid(h, w, size, overlap)
    conv_w = model.conv.weight.detach().numpy()[:, :, 0, 0].astype(np.float64)
    conv_b = model.conv.bias.detach().numpy().astype(np.float64)
    bias = model.bias.detach().numpy()[0].astype(np.float64)
    num = np.zeros((4, h, w))
    den = np.zeros((h, w))
    for tile in grid:
        rows = slice(tile.row_off, tile.row_off + tile.height)
        cols = slice(tile.col_off, tile.col_off + tile.width)
        logits = np.einsum("kc,chw->khw", conv_w, data[:, rows, cols]) + conv_b[:, None, None]
        p = _softmax(logits + bias[:, :tile.height, :tile.width])
        weight = blend_weights(grid, tile)
        num[:, rows, cols] += weight * p
        den[rows, cols] += weight
    expected = num / den
    np.testing.assert_allclose(probs, expected, atol=2e-5)
    untiled = _softmax(np.einsum("kc,chw->khw", conv_w, data) + conv_b[:, None, None]
                       + np.pad(bias, ((0, 0), (0, max(0, h - size)), (0, max(0, w - size))))[:, :h, :w])
    assert np.abs(expected - untiled).max() > 0.05  # the model really is position-dependent


def test_first_argmax_is_numpys_argmax_ties_included():
    from eoseg.stitch import first_argmax

    rng = np.random.default_rng(0)
    probs = rng.integers(0, 3, size=(5, 40, 50)).astype(np.float32) / 2  # many ties
    np.testing.assert_array_equal(first_argmax(torch.from_numpy(probs)).numpy(), probs.argmax(0))
    assert first_argmax(torch.from_numpy(probs)).dtype == torch.uint8


def test_blending_windows_are_shared_so_their_cache_does_not_grow_with_the_scene():
    """Tiles with the same 1-D weights share one window: a scene 40 tiles wide holds no more windows than one
    4 tiles wide (interior, edges, corners and the pulled-back last tiles), each equal to blend_weights."""
    counts = []
    for width in (4 * 96 + 50, 40 * 96 + 50):
        grid = TileGrid(3 * 96 + 50, width, 128, 32)
        acc = StripAccumulator(grid, 2, lambda *_: None)
        for tile in grid:
            window = acc._window(tile)
            assert np.array_equal(window.numpy(), blend_weights(grid, tile))
        counts.append(len(acc._weights))
    assert counts[0] == counts[1] <= 25  # 5 kinds of rows × 5 kinds of columns at most
