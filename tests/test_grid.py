import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from eoseg.errors import TileSizeError
from eoseg.grid import TileGrid, axis_offsets


@pytest.mark.parametrize("length,size,overlap", [(1000, 256, 32), (256, 256, 32), (257, 256, 0), (4000, 512, 64)])
def test_offsets_cover_axis_and_pull_last_tile_inside(length, size, overlap):
    offsets = axis_offsets(length, size, overlap)
    assert offsets[0] == 0
    assert offsets[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(offsets, offsets[1:], strict=False))
    covered = np.zeros(length, bool)
    for o in offsets:
        covered[o:o + size] = True
    assert covered.all()


def test_tiles_are_georeferenced_values():
    transform = Affine(10, 0, 500000, 0, -10, 4200000)
    grid = TileGrid(300, 500, 128, 16, transform, CRS.from_epsg(32618))
    tiles = list(grid)
    assert len(tiles) == len(grid) == grid.shape[0] * grid.shape[1]
    t = grid.tile(1, 2)
    assert t.transform == transform @ Affine.translation(t.col_off, t.row_off)
    assert t.crs == CRS.from_epsg(32618)
    assert t.size == (128, 128) and t.pad_bottom == t.pad_right == 0
    last = tiles[-1]
    assert last.row_off + last.height == 300 and last.col_off + last.width == 500


def test_small_scene_is_padded_to_multiple_of_32():
    grid = TileGrid(37, 53, 256, 32)
    (tile,) = list(grid)
    assert (tile.height, tile.width) == (37, 53)
    assert tile.size == (64, 64)
    assert (tile.pad_bottom, tile.pad_right) == (27, 11)


@pytest.mark.parametrize("size,overlap,match", [(100, 10, "multiple of 32"), (256, 200, "overlap")])
def test_bad_tile_size_names_the_fix(size, overlap, match):
    with pytest.raises(TileSizeError, match=match) as err:
        TileGrid(100, 100, size, overlap)
    assert "use" in str(err.value)


def test_fit_tile_never_exceeds_the_scene_short_side_by_more_than_the_multiple():
    from eoseg.grid import fit_tile

    assert fit_tile(1007, 140, 512, 128) == (160, 40)  # the Klamath strip: 20 px of padding, not 372
    assert fit_tile(299, 299, 512, 128) == (320, 80)
    assert fit_tile(2000, 1000, 512, 128) == (512, 128)  # scenes larger than a tile keep the card's tiles
    assert fit_tile(10, 10, 512, 64) == (32, 4)
    size, overlap = fit_tile(191, 368, 256, 128)
    assert size == 192 and overlap <= size // 2
