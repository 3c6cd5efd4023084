"""bench/reference_points.py and the ``points`` reference of bench/models.py: the interpreted check points in
training/points (real test blocks of ../shared/data scenes), the stratified estimator and the paired bootstrap."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from script_loader import load_script

rp = load_script("reference_points", "bench/reference_points.py")
models = load_script("bench_models", "bench/models.py")
make_data = load_script("make_data", "training/make_data.py")
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
    if "cell" in gdf.columns:  # a second phase: every cell of a stratum holds points, so its pixels are all scored
        assert (gdf.groupby("cell")["cell_pixels"].nunique() == 1).all()
        assert all(cell.startswith(f"{stratum}/") for cell, stratum in zip(gdf["cell"], gdf["stratum"], strict=True))
        by_stratum = gdf.groupby("cell").first().groupby("stratum")
        assert (by_stratum["cell_pixels"].sum() == by_stratum["stratum_pixels"].first()).all()
        assert (gdf[gdf["phase"] == 2]["cell"].str.endswith("/disagree")).all()
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


sample_points = load_script("sample_points", "training/sample_points.py")


def _second_phase_block():
    """A 20 x 30 block: dense labels water | other | unsure thirds, two maps that disagree on a 6 x 10 patch."""
    labels = np.full((20, 30), 3, np.uint8)
    labels[:, :10] = 0
    labels[:, 20:] = 255
    valid = np.ones(labels.shape, bool)
    a = np.where(labels == 255, 3, labels)
    b = a.copy()
    b[7:13, 5:15] = 2  # half in the water stratum, half in "other"
    return labels, valid, sample_points.disagreement([a, b], valid)


def test_the_second_phase_draws_only_where_the_maps_disagree_and_splits_each_stratum_into_cells():
    labels, valid, disagree = _second_phase_block()
    assert disagree.sum() == 60
    first = sample_points.sample(labels, valid, np.random.default_rng(0))
    rows = sample_points.second_phase(first, labels, valid, disagree, np.random.default_rng(1), per_block=20)
    old, new = [r for r in rows if r["phase"] == 1], [r for r in rows if r["phase"] == 2]
    assert [r["point"] for r in old] == [r["point"] for r in first]
    assert all(disagree[r["row"], r["col"]] for r in new) and all(r["class"] == "" for r in new)
    pixels = [(r["row"], r["col"]) for r in rows]
    assert len(set(pixels)) == len(pixels)  # no pixel drawn twice
    assert {r["cell"] for r in new} == {"water/disagree", "other/disagree"}
    assert all(r["cell"].startswith(r["stratum"] + "/") for r in rows)
    sizes = {r["cell"]: r["cell_pixels"] for r in rows}
    assert sizes["water/disagree"] == 30 and sizes["other/disagree"] == 30 and sizes["unsure/agree"] == 200
    assert sizes["water/agree"] + sizes["water/disagree"] == (labels == 0).sum()
    assert len(new) >= 2 * sample_points.MIN_PER_CELL


def test_points_with_cells_are_weighed_by_their_cell(shared_data, tmp_path):
    """read_points scores a second-phase file by cells: on the real Klamath test block, a map right on every
    point has mean IoU 1, and the cells' pixels add up to the block's decided strata."""
    import geopandas as gpd
    from shapely.geometry import Point

    site = next(s for s in POINT_SITES if s.name == "klamath")
    image = make_data.crop(site.scene, site.test, tmp_path / "block.tif", site.descriptions)
    with rasterio.open(image) as ds:
        xy = [ds.xy(r, c) for r, c in ((5, 5), (6, 6), (100, 70))]
        crs = ds.crs
    gdf = gpd.GeoDataFrame({"point": [0, 1, 2], "stratum": ["water"] * 2 + ["other"],
                            "stratum_pixels": [900, 900, 100], "cell": ["water/agree", "water/disagree", "other/agree"],
                            "cell_pixels": [800, 100, 100], "class": ["water", "sand", "other"]},
                           geometry=[Point(x, y) for x, y in xy], crs=crs)
    gdf.to_file(tmp_path / "p.gpkg", layer="klamath", driver="GPKG")
    points = rp.read_points(tmp_path / "p.gpkg", image)
    assert list(points.stratum) == ["water/agree", "water/disagree", "other/agree"]
    pred = np.full((site.test[3], site.test[2]), 3, np.uint8)
    pred[5, 5] = 0
    cm = rp.estimated_confusion(points, pred)
    assert cm[0, 0] == 800 and cm[2, 3] == 100 and cm[3, 3] == 100 and cm.sum() == 1000


def test_class_maps_written_by_the_benchmark_are_read_back_by_the_second_phase(shared_data, tmp_path):
    """bench/models.py --out writes each contender's map georeferenced as its real test block, and
    sample_points.py --disagree reads those maps back pixel for pixel."""
    site = next(s for s in POINT_SITES if s.name == "klamath")
    image = make_data.crop(site.scene, site.test, tmp_path / "block.tif", site.descriptions)
    shape = (site.test[3], site.test[2])
    block = models.Block(site, image, np.zeros(shape, np.uint8), np.zeros(shape, np.uint8),
                         np.zeros((5, *shape)), np.ones(shape, bool))
    pred = (np.arange(shape[0] * shape[1]) % 4).reshape(shape).astype(np.uint8)
    models.write_maps([block], {"runs/x/ens": [pred]}, tmp_path / "out")
    folder = models.map_dir(tmp_path / "out", "runs/x/ens")
    assert folder == tmp_path / "out" / "maps" / "runs_x_ens"
    with rasterio.open(folder / "klamath.tif") as ds, rasterio.open(image) as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.nodata == 255
    (back,) = sample_points.read_maps([folder], "klamath")
    np.testing.assert_array_equal(back, pred)
