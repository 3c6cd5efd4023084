"""eoseg.strokes: dense labels from a few strokes on a real Sentinel-2 crop (Virginia barrier beach).

The strokes were placed by looking at the crop (true colour and SWIR/NIR/green false colour) and at its
pixel values: dry sand is bright in red and SWIR1 (> 2000), surf bright in red but dark in SWIR1, the
Atlantic dark in both; the marsh and dune vegetation behind the beach is 'other'.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio
from shapely.geometry import LineString, Polygon

from eoseg.classes import COASTAL
from eoseg.errors import DatasetError, OutputExistsError
from eoseg.scene import SceneReader, open_scene
from eoseg.strokes import (
    IGNORE,
    block_features,
    blocks,
    class_id_of,
    feature_names,
    held_out_split,
    label_scene,
    pixel_features,
    rasterize_strokes,
    read_strokes,
)

# (class value, geometry in pixel coordinates (col, row) of tests/data/s2_virginia_10m_6band_crop.tif)
STROKES = [
    ("sand", [(134.5, 50), (120.5, 100), (109.5, 150), (98.5, 200)]),
    ("sand", [(89, 240), (86, 250)]),
    ("surf", [(144.5, 30), (141.5, 60)]),
    ("white water", [(126.5, 120), (125.5, 130)]),
    (1, [(113.5, 190), (111.5, 200)]),
    ("water", [(200, 20), (280, 230)]),
    (0, [(170, 100), (170, 200)]),
    ("other", [(95, 30), (100, 90)]),
    ("Other", [(60, 100), (75, 100), (75, 115), (60, 115)]),  # a polygon
]


def write_strokes(path, scene_path, strokes=STROKES, field="class", crs=4326):
    """The strokes as a GeoPackage, in geographic coordinates (eoseg reprojects them to the scene's UTM)."""
    import geopandas as gpd

    with rasterio.open(scene_path) as ds:
        transform, scene_crs = ds.transform, ds.crs

    def geometry(points):
        coords = [transform * p for p in points]
        return Polygon(coords) if len(points) > 3 else LineString(coords)

    values = [str(v) for v, _ in strokes]
    gdf = gpd.GeoDataFrame({field: values}, geometry=[geometry(p) for _, p in strokes], crs=scene_crs)
    gdf.to_crs(crs).to_file(path, driver="GPKG")
    return path


@pytest.fixture(scope="module")
def strokes_file(tmp_path_factory, s2_scene):
    return write_strokes(tmp_path_factory.mktemp("strokes") / "strokes.gpkg", s2_scene)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, s2_scene, strokes_file):
    out = tmp_path_factory.mktemp("labels")
    result = label_scene(s2_scene, strokes_file, out)
    with rasterio.open(result.paths.labels) as ds:
        labels = ds.read(1)
    return result, labels


def scene_bands(path):
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float64)


# ------------------------------------------------------------------------------------------- end to end


def test_stroke_pixels_get_their_class(labelled, s2_scene, strokes_file):
    result, labels = labelled
    scene = open_scene(s2_scene)
    strokes = read_strokes(strokes_file, scene)
    classes, _ = rasterize_strokes(strokes, rasterio.windows.Window(0, 0, scene.width, scene.height),
                                   scene.transform)
    drawn = classes != IGNORE
    assert drawn.sum() > 500
    assert (labels[drawn] != IGNORE).mean() > 0.9
    for cid in COASTAL.ids:
        mine = classes == cid
        assert mine.any()
        assert (labels[mine] == cid).mean() > 0.85, COASTAL.name_of(cid)


def test_unstroked_beach_surf_and_ocean_pixels_follow_the_physics(labelled, s2_scene):
    """Pixels far from any stroke that the band values identify for sure get the right class."""
    _, labels = labelled
    b = scene_bands(s2_scene)
    red, swir1 = b[2], b[4]
    rows = np.arange(labels.shape[0])[:, None]
    far = (rows > 205) | (rows < 25)  # the beach and surf strokes lie between rows 30 and 200 (and 240-250)
    far[240:251] = False
    sure = {2: (swir1 > 2800) & (red > 2400), 1: (red > 1800) & (swir1 < 700), 0: (red < 900) & (swir1 < 120)}
    for cid, mask in sure.items():
        mask &= far
        assert mask.sum() > 10, cid
        got = labels[mask]
        assert (got[got != IGNORE] == cid).mean() > 0.9, COASTAL.name_of(cid)


def test_unsure_pixels_are_ignored_and_threshold_controls_them(labelled, s2_scene, strokes_file, tmp_path):
    result, labels = labelled
    assert result.counts["ignore"] == int((labels == IGNORE).sum()) > 0
    assert result.counts["nodata"] == 0
    loose = label_scene(s2_scene, strokes_file, tmp_path / "loose", threshold=0.0, quicklook=False)
    strict = label_scene(s2_scene, strokes_file, tmp_path / "strict", threshold=0.95, quicklook=False)
    assert loose.counts["ignore"] == 0
    assert strict.counts["ignore"] > result.counts["ignore"]


def test_outputs_are_georeferenced_like_the_scene(labelled, s2_scene):
    result, labels = labelled
    with rasterio.open(s2_scene) as src, rasterio.open(result.paths.labels) as ds:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        assert ds.dtypes[0] == "uint8" and ds.nodata == IGNORE
        assert ds.colormap(1)[2][:3] == COASTAL.classes[2].colour
    qml = result.paths.qml.read_text()
    assert 'type="paletted"' in qml and 'label="sand"' in qml
    assert result.paths.quicklook.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(result.paths.report.read_text())
    assert report["counts"] == result.counts
    assert sum(report["counts"].values()) == labels.size
    assert set(report["stroke_pixels"]) == set(COASTAL.names)
    assert report["held_out"]["held_out_strokes"] >= 4 and report["held_out"]["accuracy"] > 0.8


def test_nodata_pixels_are_255(s2_scene, strokes_file, tmp_path):
    holed = tmp_path / "holed.tif"
    with rasterio.open(s2_scene) as src:
        profile, data, descriptions = src.profile, src.read(), src.descriptions
    data[:, 0:40, 200:300] = 0  # nodata is 0
    with rasterio.open(holed, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
    result = label_scene(holed, strokes_file, tmp_path / "out", quicklook=False)
    with rasterio.open(result.paths.labels) as ds:
        labels = ds.read(1)
    assert (labels[0:40, 200:300] == IGNORE).all()
    assert result.counts["nodata"] == 40 * 100


def test_window_keeps_the_rest_of_the_scene_out(s2_scene, strokes_file, labelled, tmp_path):
    full, _ = labelled
    result = label_scene(s2_scene, strokes_file, tmp_path / "top", window=(0, 0, 320, 128), quicklook=False)
    with rasterio.open(result.paths.labels) as ds:
        labels = ds.read(1)
    assert (labels[128:] == IGNORE).all() and (labels[:128] != IGNORE).mean() > 0.8
    assert result.counts["outside"] == 320 * 128 and sum(result.counts.values()) == labels.size
    assert result.stroke_pixels["sand"] < full.stroke_pixels["sand"]  # the strokes below row 128 are not used
    assert json.loads(result.paths.report.read_text())["window"] == [0, 0, 320, 128]
    with pytest.raises(DatasetError, match="window 0,200,320,128 is not inside"):
        label_scene(s2_scene, strokes_file, tmp_path / "bad", window=(0, 200, 320, 128))
    with pytest.raises(DatasetError, match="no stroke covers a valid pixel of the scene inside the window"):
        label_scene(s2_scene, strokes_file, tmp_path / "empty", window=(0, 0, 40, 20))


def test_existing_outputs_need_overwrite(labelled, s2_scene, strokes_file):
    result, _ = labelled
    with pytest.raises(OutputExistsError, match="--overwrite"):
        label_scene(s2_scene, strokes_file, result.paths.labels.parent)


# ------------------------------------------------------------------------------------------- stroke errors


def test_stroke_errors_are_one_line(s2_scene, tmp_path):
    scene = open_scene(s2_scene)
    cases = {
        "field": (write_strokes(tmp_path / "f.gpkg", s2_scene, field="kind"), "no field 'class'", "--field"),
        "value": (write_strokes(tmp_path / "v.gpkg", s2_scene, STROKES + [("marsh", [(10, 10), (20, 20)])]),
                  "unknown class value(s) 'marsh'", "0=water"),
        "outside": (write_strokes(tmp_path / "o.gpkg", s2_scene, [("sand", [(-900, 10), (-800, 20)])]),
                    "no stroke lies inside the scene", "CRS"),
        "missing": (tmp_path / "nope.gpkg", "does not exist", "GeoPackage"),
    }
    for name, (path, *needles) in cases.items():
        with pytest.raises(DatasetError) as info:
            read_strokes(path, scene)
        text = str(info.value)
        assert "\n" not in text and str(path) in text, name
        for needle in needles:
            assert needle in text, (name, text)


def test_an_ungeoreferenced_scene_is_refused_with_its_fix(nocrs_scene, strokes_file, tmp_path):
    from eoseg.errors import GeoreferenceError

    with pytest.raises(GeoreferenceError) as info:
        label_scene(nocrs_scene, strokes_file, tmp_path)
    assert "no CRS" in str(info.value) and "gdal_translate" in str(info.value)
    assert "--allow-ungeoreferenced" not in str(info.value)  # eoseg label has no such option


def test_a_class_without_strokes_and_strokes_outside_warn(s2_scene, tmp_path, caplog):
    partial = [s for s in STROKES if s[0] not in ("surf", "white water", 1)] + [("sand", [(-900, 10), (-800, 20)])]
    path = write_strokes(tmp_path / "partial.gpkg", s2_scene, partial)
    strokes = read_strokes(path, open_scene(s2_scene))
    assert any("no strokes for whitewater" in w for w in strokes.warnings)
    assert any("1 stroke(s) lie outside the scene" in w for w in strokes.warnings)
    with caplog.at_level(logging.WARNING):
        result = label_scene(s2_scene, path, tmp_path / "out", quicklook=False)
    assert result.counts["whitewater"] == 0
    assert "no strokes for whitewater" in caplog.text


def test_class_values_by_id_or_name():
    for value, expected in [(0, 0), ("2", 2), (3.0, 3), ("Water", 0), ("white_water", 1), ("White Water", 1),
                            ("whitewater", 1), ("surf", 1), ("sand", 2), ("OTHER", 3)]:
        assert class_id_of(value, COASTAL) == expected, value
    for value in (4, 1.5, "marsh", None, float("nan"), 255):
        assert class_id_of(value, COASTAL) is None, value


def test_lines_touch_polygons_fill_and_stroke_width_widens(s2_scene, tmp_path):
    scene = open_scene(s2_scene)
    window = rasterio.windows.Window(0, 0, scene.width, scene.height)
    line = [("sand", [(10.2, 10.5), (30.7, 20.5)])]
    square = [("water", [(100, 100), (110, 100), (110, 110), (100, 110)])]
    thin = read_strokes(write_strokes(tmp_path / "l.gpkg", s2_scene, line, crs=scene.crs), scene)
    wide = read_strokes(write_strokes(tmp_path / "w.gpkg", s2_scene, line, crs=scene.crs), scene, stroke_width=5)
    poly = read_strokes(write_strokes(tmp_path / "p.gpkg", s2_scene, square, crs=scene.crs), scene)
    thin_px = (rasterize_strokes(thin, window, scene.transform)[0] == 2).sum()
    assert 21 <= thin_px <= 45  # every pixel the line crosses (21 columns, 11 rows), no more
    assert (rasterize_strokes(wide, window, scene.transform)[0] == 2).sum() > 4 * thin_px
    classes, ids = rasterize_strokes(poly, window, scene.transform)
    assert (classes == 0).sum() == 100 and (classes[100:110, 100:110] == 0).all() and (ids == 1).sum() == 100


def test_held_out_split_is_by_stroke():
    classes = np.array([0] * 6 + [1] * 6 + [2] * 3)
    strokes = np.array([1, 1, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6])
    held = held_out_split(classes, strokes, 0.25, seed=0)
    for sid in np.unique(strokes):
        assert len(set(held[strokes == sid])) == 1  # a stroke is wholly held out or wholly trained on
    assert held[classes == 0].any() and held[classes == 1].any() and not held[classes == 2].any()
    assert not held[classes == 0].all() and not held[classes == 1].all()


# ------------------------------------------------------------------------------------------- features


def test_features_indices_and_nodata_aware_local_statistics():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.05, 0.5, (3, 20, 24)).astype(np.float32)
    valid = np.ones((20, 24), bool)
    valid[5:9, 5:9] = False
    roles = ("green", "red", "nir")
    feats = pixel_features(image, valid, roles, scales=(3,))
    names = feature_names(roles, scales=(3,))
    assert feats.shape == (len(names), 20, 24) and names[3:5] == ["ndwi", "ndvi"]
    g, r, n = image
    np.testing.assert_allclose(feats[3][valid], ((g - n) / (g + n))[valid], rtol=1e-5)
    np.testing.assert_allclose(feats[4][valid], ((n - r) / (n + r))[valid], rtol=1e-5)
    # a constant band stays constant in its local mean next to nodata, with zero std
    const = pixel_features(np.full((1, 20, 24), 0.3, np.float32), valid, ("blue",), scales=(3, 7))
    assert np.allclose(const[1][valid], 0.3, atol=1e-6) and np.allclose(const[2][valid], 0, atol=1e-3)
    assert np.allclose(const[3][valid], 0.3, atol=1e-6)
    assert (feats[:, ~valid] == 0).all()
    # by hand: the 3×3 mean / std of the red band at an interior pixel
    window = r[10:13, 14:17]
    i = names.index("mean3_red")
    assert feats[i, 11, 15] == pytest.approx(window.mean(), rel=1e-5)
    assert feats[i + 1, 11, 15] == pytest.approx(window.std(), rel=1e-3)


def test_streamed_blocks_give_the_one_pass_features(s2_scene):
    scene = open_scene(s2_scene)
    scale = np.full(scene.count, 1000.0, np.float32)
    with SceneReader(scene) as reader:
        data, valid = reader.read(rasterio.windows.Window(0, 0, scene.width, scene.height))
        whole = pixel_features(data / scale[:, None, None], valid, scene.roles)
        parts = [block_features(reader, block, scale, scene.roles, (3, 7, 15))[0]
                 for block in blocks(scene, halo=7, block_pixels=scene.width * 40)]
    assert len(parts) > 3
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-4, atol=1e-5)


def test_labels_feed_a_training_dataset_with_255_as_ignore(labelled, s2_scene, tmp_path):
    import torch

    from eoseg.config import DatasetConfig, validate
    from eoseg.dataset import TileDataset, make_dataset

    result, labels = labelled
    cfg = validate(DatasetConfig, {
        "sources": [{"kind": "scene", "scene": str(s2_scene), "roles": ["blue", "green", "red", "nir", "swir1"],
                     "labels": str(result.paths.labels), "name": "20160112_virginia"}],
        "tile_size": 128, "overlap": 0, "split": {"train": 1.0, "validation": 0.0, "test": 0.0, "group_by": "scene"}})
    manifest = make_dataset(cfg, tmp_path / "ds")
    ds = TileDataset(manifest, "train")
    assert len(ds) == 6  # rows 0 / 128, cols 0 / 128 / 192
    for i, record in enumerate(ds.records):
        r0, c0, h, w = record["window"]
        np.testing.assert_array_equal(ds[i][1].numpy(), labels[r0:r0 + h, c0:c0 + w])  # 255 stays 255
    assert (torch.stack([ds[i][1] for i in range(len(ds))]) == IGNORE).any()


def test_label_quicklook_leaves_the_matplotlib_backend_alone(s2_scene, strokes_file, tmp_path, monkeypatch):
    import matplotlib

    from eoseg.strokes import read_strokes, write_label_quicklook

    switches = []
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: switches.append(a))
    scene = open_scene(s2_scene)
    labels = tmp_path / "labels.tif"
    with rasterio.open(s2_scene) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": 255}
    with rasterio.open(labels, "w", **profile) as dst:
        dst.write(np.full((1, profile["height"], profile["width"]), 3, np.uint8))
    png = write_label_quicklook(scene, read_strokes(strokes_file, scene), labels, tmp_path / "q.png")
    assert switches == [] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
