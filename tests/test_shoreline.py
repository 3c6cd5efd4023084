"""predict --shoreline end to end on the real crops (packaged model), the index method and Otsu's threshold."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
import shapely
from scipy import ndimage

from eoseg.outputs.shoreline import read_lines
from eoseg.predict import Predictor, PredictSettings
from eoseg.shoreline import otsu_threshold, water_index

SAND = 2


@pytest.fixture(scope="module")
def resunet():
    return Predictor("resunet", PredictSettings(device="cpu", precision="fp32"))


def _vertices_px(frame, transform):
    xy = shapely.get_coordinates(frame.geometry.values)
    col, row = ~transform * (xy[:, 0], xy[:, 1])
    return np.asarray(col), np.asarray(row)


@pytest.mark.parametrize(("scene", "span"), [("s2_scene", 0.9), ("klamath_scene", 0.6)])
def test_predict_shoreline_follows_the_ocean_beach(scene, span, request, tmp_path):
    """Virginia: a sandy barrier beach the whole crop long; Klamath: the beach starts a third of the way down
    (above it, surf breaks on rock and no sand is mapped, so no shoreline is kept there)."""
    path = request.getfixturevalue(scene)
    predictor = Predictor("resunet", PredictSettings(device="cpu", precision="fp32", shoreline=True,
                                                     min_shoreline_length=200))
    result = predictor.predict(path, tmp_path, progress=False)
    lines = read_lines(result.outputs["shoreline"])
    with rasterio.open(result.outputs["classes"]) as ds:
        classes, transform, height = ds.read(1), ds.transform, ds.height
    assert set(lines.method) == {"prob"} and (lines.length_m >= 200).all()
    beach = lines.loc[lines.length_m.idxmax()]
    col, row = _vertices_px(lines.loc[[beach.name]], transform)
    assert np.ptp(row) > span * height  # the ocean beach runs north–south along the crop
    # the line lies on the edge between water / white water and sand: both within 2 px of every vertex
    r, c = np.clip(np.rint(row).astype(int), 0, height - 1), np.clip(np.rint(col).astype(int), 0, classes.shape[1] - 1)
    for ids in ([0, 1], [SAND]):
        near = ndimage.binary_dilation(np.isin(classes, ids), iterations=2)
        assert near[r, c].mean() > 0.98
    item = json.loads(result.outputs["stac"].read_text())
    assert item["assets"]["shoreline"]["href"].endswith("_shoreline.gpkg")
    assert item["assets"]["shoreline"]["type"] == "application/geopackage+sqlite3"


def test_index_method_traces_mndwi_at_a_per_scene_threshold_near_the_prob_line(s2_scene, tmp_path):
    settings = dict(device="cpu", precision="fp32", shoreline=True, min_shoreline_length=500)
    prob = Predictor("resunet", PredictSettings(**settings)).predict(s2_scene, tmp_path / "prob", progress=False)
    index = Predictor("resunet", PredictSettings(**settings, shoreline_method="index")).predict(
        s2_scene, tmp_path / "index", progress=False)
    a, b = read_lines(prob.outputs["shoreline"]), read_lines(index.outputs["shoreline"])
    assert set(b.method) == {"index:mndwi"}
    level = float(b.level.iloc[0])
    # the threshold lies between the MNDWI of the sand and of the sea in this scene
    with rasterio.open(s2_scene) as ds:
        green, swir1 = ds.read(2).astype("float32") * 1e-4, ds.read(5).astype("float32") * 1e-4
    with rasterio.open(prob.outputs["classes"]) as ds:
        classes = ds.read(1)
    mndwi = water_index(np.stack([green, swir1]), np.ones(green.shape, bool))
    assert np.median(mndwi[classes == SAND]) < level < np.median(mndwi[classes == 0])
    # the two methods' ocean-beach lines lie within a pixel or two of each other (10 m pixels)
    la, lb = a.geometry.iloc[a.length_m.argmax()], b.geometry.iloc[b.length_m.argmax()]
    pts = shapely.get_coordinates(lb)
    distances = shapely.distance(la, shapely.points(pts))
    assert np.median(distances) < 20.0


def test_index_method_needs_swir_or_nir(collar_scene, tmp_path):
    from eoseg.errors import BandMappingError
    from eoseg.scene import open_scene
    from eoseg.shoreline import _index_scene

    with pytest.raises(BandMappingError, match="water index"):
        _index_scene(open_scene(collar_scene))  # blue, green, red only


def test_otsu_threshold_separates_two_samples():
    rng = np.random.default_rng(0)
    edges = np.linspace(-1, 1, 2001)
    sand = np.histogram(rng.normal(-0.4, 0.05, 500), edges)[0]
    water = np.histogram(rng.normal(0.3, 0.05, 50000), edges)[0]  # many more water pixels: balanced anyway
    assert -0.15 < otsu_threshold(sand, water, edges) < 0.05
    assert otsu_threshold(water, sand, edges) == otsu_threshold(sand, water, edges)


def test_water_index_is_nan_where_invalid():
    data = np.array([[[0.3, 0.1, 0.0]], [[0.1, 0.3, 0.0]]], np.float32)
    out = water_index(data, np.array([[True, True, True]]))
    assert out[0, 0] == pytest.approx(0.5) and out[0, 1] == pytest.approx(-0.5) and np.isnan(out[0, 2])


@pytest.mark.parametrize("method", ["prob", "index"])
def test_shoreline_of_a_product_folder_takes_date_and_sensor_from_its_metadata(method, data_dir, tmp_path):
    """A Sentinel-2 product folder (per-band files, 20 m SWIR): both methods trace it, and the lines carry the
    acquisition date and sensor of the product's metadata, not of the folder's file times."""
    product = tmp_path / "beach_20160112"  # a folder name that names no sensor: it must come from the metadata
    shutil.copytree(data_dir / "products" / "S2A_18SVG_20160112_0_L1C", product)
    settings = PredictSettings(device="cpu", precision="fp32", shoreline=True, shoreline_method=method,
                               min_shoreline_length=300)
    result = Predictor("resunet", settings).predict(product, tmp_path / "out", progress=False)
    lines = read_lines(result.outputs["shoreline"])
    assert len(lines) >= 1 and set(lines.method) == {"prob" if method == "prob" else "index:mndwi"}
    assert set(lines.date) == {"2016-01-12T00:00:00Z"} and set(lines.sensor) == {"sentinel2"}
