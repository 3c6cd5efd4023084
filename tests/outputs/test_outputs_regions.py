"""StripRegions: regions of a class raster fed top to bottom, on class rasters of the real test crops."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize, shapes, sieve
from test_outputs_vectors import l8_scene, s2_scene

from eoseg.classes import COASTAL
from eoseg.outputs.regions import StripRegions, regions_of, to_crs

NODATA = COASTAL.nodata
SCENES = {"s2": s2_scene, "l8": l8_scene}


@pytest.fixture(scope="module", params=sorted(SCENES))
def scene(request):
    return SCENES[request.param]()


def whole_raster_regions(classes, transform):
    """The reference: one ``rasterio.features.shapes`` call over the whole raster, in the CRS."""
    found = list(shapes(classes, mask=classes != NODATA, transform=transform, connectivity=4))
    return (np.array([shapely.geometry.shape(g) for g, _ in found], dtype=object),
            np.array([int(v) for _, v in found]))


def feed(stream: StripRegions, classes: np.ndarray, block: int):
    """Push ``classes`` in blocks of ``block`` rows; returns every region and, per push, what came out."""
    out, per_push = [], []
    for r0 in range(0, classes.shape[0], block):
        got = stream.push(classes[r0:r0 + block])
        per_push.append((min(classes.shape[0], r0 + block), got))
        out.extend(got)
    out.extend(stream.finish())
    return np.concatenate([g for g, _ in out]), np.concatenate([v for _, v in out]), per_push


def test_streamed_regions_equal_whole_raster_shapes(scene):
    classes, transform, _ = scene
    ref_g, ref_v = whole_raster_regions(classes, transform)
    geoms, values, _ = feed(StripRegions(*classes.shape, NODATA, band_rows=37), classes, block=13)
    geoms = to_crs(geoms, transform)
    assert len(geoms) == len(ref_g) and sorted(values) == sorted(ref_v)  # the same regions, each once
    for value in np.unique(ref_v):
        got, ref = geoms[values == value], ref_g[ref_v == value]
        np.testing.assert_allclose(sorted(shapely.area(got)), sorted(shapely.area(ref)), rtol=1e-9)
        assert shapely.symmetric_difference(shapely.union_all(got), shapely.union_all(ref)).area < 1e-6
    assert shapely.is_valid(geoms).all()


def test_regions_leave_as_soon_as_they_are_complete(scene):
    """Only pieces on the last band's lower edge are held; every region above it has been handed out."""
    classes, _, _ = scene
    band = 37
    stream = StripRegions(*classes.shape, NODATA, band_rows=band)
    ref_g, _ = regions_of(classes, NODATA, band_rows=classes.shape[0])
    bottoms = shapely.bounds(ref_g)[:, 3]
    released = 0
    for r0 in range(0, classes.shape[0], band):
        r1 = min(classes.shape[0], r0 + band)
        released += sum(len(g) for g, _ in stream.push(classes[r0:r1]))
        assert released >= (bottoms < r1).sum()
        held = stream._open[0]
        assert (shapely.bounds(held)[:, 3] == r1).all() if len(held) else True
        assert len(held) <= classes.shape[1]  # bounded by the edge, not by the rows seen so far
    assert released + sum(len(g) for g, _ in stream.finish()) == len(ref_g)


def _raster(geoms, values, shape):
    return rasterize(zip(geoms, values, strict=True), out_shape=shape, fill=NODATA, dtype="uint8",
                     transform=rasterio.Affine.identity())


@pytest.mark.parametrize("max_halo", [1024, 0])
def test_sieve_on_strips_judges_region_size_like_the_whole_raster(scene, max_halo):
    """With its halo, the band-wise sieve keeps every pixel of a large region and removes every small one;
    without it (max_halo=0), large regions cut by band edges are sieved away."""
    classes, _, _ = scene
    min_pixels = 12
    valid = classes != NODATA
    whole = sieve(classes, size=min_pixels, mask=valid, connectivity=4)
    large = (whole == classes) & valid  # pixels of regions of at least min_pixels
    stream = StripRegions(*classes.shape, NODATA, min_pixels=min_pixels, band_rows=23, max_halo=max_halo)
    geoms, values, _ = feed(stream, classes, block=23)
    streamed = _raster(geoms, values, classes.shape)
    kept = bool((streamed[large] == classes[large]).all())
    assert kept == (max_halo > 0)
    if max_halo:
        pixels = np.rint(shapely.area(geoms))
        islands = pixels < min_pixels  # only regions with no valid neighbour to merge into may stay small
        whole_g, whole_v = regions_of(whole, NODATA)
        assert islands.sum() == (np.rint(shapely.area(whole_g)) < min_pixels).sum()
        assert (streamed[valid] != NODATA).all() and (streamed[~valid] == NODATA).all()
        assert (streamed != whole).mean() < 0.01  # a few small regions may join another neighbour


@pytest.mark.parametrize("seed", range(3))
def test_noisy_maps_cut_into_many_bands_give_the_whole_raster_regions(seed):
    """A noisy map (regions with many holes, corner-only contacts across band edges) cut every 7 rows: the
    pieces matched along the edges and united once are the regions of one whole-raster polygonization."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, size=(120, 90)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.5] = 0  # one large class 0 region full of holes
    classes[:, :3] = NODATA
    ref_g, ref_v = whole_raster_regions(classes, rasterio.Affine.identity())
    geoms, values, _ = feed(StripRegions(*classes.shape, NODATA, band_rows=7), classes, block=11)
    assert len(geoms) == len(ref_g) and shapely.is_valid(geoms).all()
    for value in np.unique(ref_v):
        np.testing.assert_allclose(sorted(shapely.area(geoms[values == value])),
                                   sorted(shapely.area(ref_g[ref_v == value])))
    np.testing.assert_array_equal(_raster(geoms, values, classes.shape), classes)
