"""bench/reference_points.py and the ``points`` reference of bench/models.py: the interpreted check points in
training/points (real test blocks of ../shared/data scenes), the stratified estimator and the paired bootstrap."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


rp = _load("reference_points", ROOT / "bench" / "reference_points.py")
models = _load("bench_models", ROOT / "bench" / "models.py")
make_data = _load("make_data", ROOT / "training" / "make_data.py")
POINT_SITES = [s for s in models.SITES if (models.POINTS / f"{s.name}.gpkg").is_file()]


def _points(truth, stratum, stratum_pixels, rows=None, cols=None) -> "rp.Points":
    n = len(truth)
    return rp.Points(rows=np.zeros(n, int) if rows is None else np.array(rows),
                     cols=np.arange(n) if cols is None else np.array(cols),
                     truth=np.array(truth), stratum=np.array(stratum),
                     stratum_pixels=np.array(stratum_pixels), unsure=0)


def test_each_point_stands_for_its_strata_share_of_the_block():
    # stratum a: 1000 px, two points (one right, one called white water); stratum b: 10 px, one point, right
    points = _points([0, 0, 2], ["a", "a", "b"], [1000, 1000, 10])
    pred = np.array([[0, 1, 2]])
    cm = rp.estimated_confusion(points, pred)
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 1], expected[2, 2] = 500, 500, 10
    np.testing.assert_allclose(cm, expected)
    assert rp.mean_iou(cm) == pytest.approx((0.5 + 0.0 + 1.0) / 3)  # water, white water, sand present


def test_a_point_the_model_left_as_nodata_is_not_scored():
    points = _points([0, 3], ["a", "a"], [100, 100])
    cm = rp.estimated_confusion(points, np.array([[0, 255]]))
    assert cm.sum() == 50 and cm[0, 0] == 50


def test_the_bootstrap_interval_brackets_the_difference_and_is_zero_between_equal_maps():
    points = _points([0, 1, 2, 3] * 5, ["a", "b", "c", "d"] * 5, [400, 30, 50, 600] * 5)
    right = np.array([[0, 1, 2, 3] * 5])
    wrong = right.copy()
    wrong[0, 2::4] = 3  # every sand point called "other"
    d, low, high = rp.bootstrap_difference([points], [right], [wrong], reps=200)
    assert d > 0 and low <= d <= high and low > 0
    assert rp.bootstrap_difference([points], [right], [right], reps=50) == (0.0, 0.0, 0.0)


def test_the_points_reference_scores_only_blocks_with_points():
    coast, inland = (next(s for s in models.SITES if s.name == n) for n in ("virginia", "inland"))
    shape = (2, 3)
    empty = np.full(shape, 255, np.uint8)
    blocks = [models.Block(coast, Path("v.tif"), empty, empty, np.zeros((5, *shape)), np.ones(shape, bool),
                           _points([0, 3], ["water", "other"], [4, 2], rows=[0, 1], cols=[0, 2])),
              models.Block(inland, Path("i.tif"), empty, empty, np.zeros((5, *shape)), np.ones(shape, bool))]
    preds = [np.array([[0, 0, 0], [3, 3, 3]], np.uint8), np.full(shape, 3, np.uint8)]
    result = models.score(blocks, preds, "points")
    assert set(result) == {"virginia", "coastal sites"}
    assert result["virginia"]["points"] == 2 and result["virginia"]["miou"] == 1.0
    assert result["coastal sites"]["pixels"] == 6


@pytest.fixture(scope="module")
def test_blocks(shared_data, tmp_path_factory):
    """Each point site's test block cut from its real scene as training/make_data.py cuts it."""
    out = tmp_path_factory.mktemp("blocks")
    return {site.name: make_data.crop(site.scene, site.test, out / f"{site.name}_test.tif", site.descriptions)
            for site in POINT_SITES}


@pytest.mark.parametrize("site", POINT_SITES, ids=lambda s: s.name)
def test_committed_points_fall_on_their_pixels_of_the_test_block(site, test_blocks):
    import geopandas as gpd

    gdf = gpd.read_file(models.POINTS / f"{site.name}.gpkg")
    points = rp.read_points(models.POINTS / f"{site.name}.gpkg", test_blocks[site.name])
    decided = gdf[gdf["class"] != rp.UNSURE]
    assert len(points) + points.unsure == len(gdf) and len(points) >= 100
    np.testing.assert_array_equal(points.rows, decided["row"].to_numpy())
    np.testing.assert_array_equal(points.cols, decided["col"].to_numpy())
    assert (gdf.groupby("stratum")["stratum_pixels"].nunique() == 1).all()  # one size per stratum
    assert set(gdf["stratum"]) == {"water", "whitewater", "sand", "other", rp.UNSURE}
    # a prediction that agrees with every point: mean IoU 1, and the strata's pixels add up to the block's
    pred = np.full((site.test[3], site.test[2]), 255, np.uint8)
    pred[points.rows, points.cols] = points.truth
    cm = rp.estimated_confusion(points, pred)
    assert rp.mean_iou(cm) == pytest.approx(1.0)
    sizes = gdf[gdf["class"] != rp.UNSURE].groupby("stratum")["stratum_pixels"].first()
    assert cm.sum() == pytest.approx(sizes.sum())


def test_points_outside_the_image_are_refused(shared_data, tmp_path):
    site = POINT_SITES[0]
    other = make_data.crop(site.scene, site.train[0], tmp_path / "train.tif", site.descriptions)
    with pytest.raises(ValueError, match="fall outside"):
        rp.read_points(models.POINTS / f"{site.name}.gpkg", other)
