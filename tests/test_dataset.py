"""eoseg dataset: remapping, grouped splits, folder and GeoTIFF sources, tiles and the manifest."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from eoseg.config import DatasetConfig, SplitConfig, validate
from eoseg.dataset import (
    TileDataset,
    apply_remap,
    assign_splits,
    group_key,
    load_manifest,
    make_dataset,
    pooled_stats,
    standardization_for,
)
from eoseg.errors import DatasetError, OutputExistsError
from eoseg.standardize import Standardization

DATA = Path(__file__).parent / "data"
OB = DATA / "ocean_beach"


def ob_config(**extra) -> DatasetConfig:
    cfg = {
        "sources": [{"kind": "folder", "labels": str(OB / "labels"), "bands": [
            {"folder": str(OB / "images_rgb"), "roles": ["red", "green", "blue"]},
            {"folder": str(OB / "images_nir"), "roles": ["nir"], "stem_replace": [["_ir-", "-"]]},
        ]}],
        "tile_size": 96,
        "split": {"train": 0.34, "validation": 0.33, "test": 0.33, "seed": 0},
    }
    cfg.update(extra)
    return validate(DatasetConfig, cfg)


@pytest.fixture(scope="module")
def ob_dataset(tmp_path_factory):
    return make_dataset(ob_config(), tmp_path_factory.mktemp("ds") / "ob")


# ------------------------------------------------------------------------------------------- pure parts


def test_remap_several_to_one_and_unknown_values():
    label = np.array([[0, 1, 4], [5, 255, 3]], dtype=np.uint8)
    out = apply_remap(label, {4: 3, 5: 3}, [0, 1, 2, 3], 255)
    np.testing.assert_array_equal(out, [[0, 1, 3], [3, 255, 3]])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(apply_remap(label, {4: 255, 5: 2}, [0, 1, 2, 3], 255), [[0, 1, 255], [2, 255, 3]])
    with pytest.raises(DatasetError, match=r"label values \[4, 5\].*remap"):
        apply_remap(label, {}, [0, 1, 2, 3], 255, path="x.png")


def test_swapping_classes_uses_the_original_values():
    np.testing.assert_array_equal(apply_remap(np.array([0, 1]), {0: 1, 1: 0}, [0, 1], 255), [1, 0])


def test_group_keys():
    name = "20190125T185649_20190125T185958_T10SEG-0"
    assert group_key(name, SplitConfig(group_by="date")) == "20190125"
    assert group_key(name, SplitConfig(group_by="scene")) == name
    assert group_key(name, SplitConfig(group_by="pattern", group_pattern=r"T\d\d[A-Z]{3}")) == "T10SEG"
    assert group_key("LC08_L1TP_044034_20170521_x", SplitConfig(group_by="date")) == "20170521"  # date anywhere
    with pytest.raises(DatasetError, match="group_pattern"):
        group_key("nodate", SplitConfig(group_by="pattern", group_pattern=r"^(\d{8})"))


def test_splits_are_grouped_seeded_and_sized():
    groups = [f"2019{m:02d}01" for m in range(1, 13) for _ in range(2)]  # 12 dates × 2 chips
    cfg = SplitConfig(train=0.5, validation=0.25, test=0.25, seed=1)
    split = assign_splits(groups, cfg)
    assert sorted(split) == sorted(set(groups))  # one split per group: near-duplicates never straddle
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "validation", "test")}
    assert counts == {"train": 6, "validation": 3, "test": 3}
    assert assign_splits(groups, cfg) == split
    assert assign_splits(groups, cfg.model_copy(update={"seed": 2})) != split
    with pytest.raises(DatasetError, match="too few"):
        assign_splits(["a", "b"], cfg)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="must be 1"):
        SplitConfig(train=0.8, validation=0.3, test=0.1)


def test_pooled_stats_by_hand():
    a = {"height": 1, "width": 2, "stats": {"mean": [1.0], "std": [0.0], "p02": [0.0], "p98": [2.0],
                                           "valid_fraction": 1.0, "count": 2}}
    b = {"height": 1, "width": 2, "stats": {"mean": [3.0], "std": [0.0], "p02": [0.0], "p98": [4.0],
                                           "valid_fraction": 1.0, "count": 2}}
    s = pooled_stats([a, b])  # values 1, 1, 3, 3 → mean 2, std 1; stretched .5, .5, .75, .75
    assert s["mean"] == pytest.approx([2.0]) and s["std"] == pytest.approx([1.0])
    assert s["stretched_mean"] == pytest.approx([0.625]) and s["stretched_std"] == pytest.approx([0.125])


# ------------------------------------------------------------------------------------------- folder source


def test_folder_dataset_manifest(ob_dataset):
    m = load_manifest(ob_dataset.path)
    assert m.roles == ["red", "green", "blue", "nir"]
    assert m.classes.names == ["water", "whitewater", "sand", "other"]
    assert len(m.scenes) == 6
    groups = {sp: set(v["groups"]) for sp, v in m.data["split"]["counts"].items()}
    assert all(len(g) == 1 for g in groups.values()) and len(set.union(*groups.values())) == 3
    for sid, s in m.scenes.items():
        assert s["group"] == sid[:8] and s["split"] in ("train", "validation", "test")
        assert len(s["stats"]["mean"]) == 4 and s["width"] == 72
    # a 153 × 72 chip with 96-px tiles: rows at 0 and 57, one column, width reflect-padded to 96
    assert len(m.tiles()) == 12
    assert all(t["split"] == m.scenes[t["scene"]]["split"] for t in m.tiles())
    assert set(m.data["stats"]["train"]) == {"mean", "std", "stretched_mean", "stretched_std"}


def test_tiles_match_the_source_and_padding_is_ignored(ob_dataset):
    from PIL import Image

    from eoseg.dataset import read_image

    m = ob_dataset
    tile = next(t for t in m.tiles() if t["window"][0] > 0)
    r0, c0, h, w = tile["window"]
    with np.load(m.path / tile["file"]) as z:
        image, label, valid = z["image"], z["label"], z["valid"]
    assert image.shape == (4, 96, 96) and image.dtype == np.uint8 and label.shape == (96, 96)
    name = tile["scene"]
    rgb = read_image(OB / "images_rgb" / f"{name}.jpg")  # R, G, B
    nir = read_image(OB / "images_nir" / f"{name.replace('-', '_ir-')}.jpg")[0]
    lab = np.asarray(Image.open(OB / "labels" / f"{name}.png"))
    np.testing.assert_array_equal(image[:3, :h, :w], rgb[:, r0:r0 + h, c0:c0 + w])
    np.testing.assert_array_equal(image[3, :h, :w], nir[r0:r0 + h, c0:c0 + w])
    pil = np.asarray(Image.open(OB / "images_rgb" / f"{name}.jpg")).transpose(2, 0, 1).astype(int)
    assert np.abs(pil - rgb.astype(int)).mean() < 2  # same channel order as PIL (JPEG decoders differ slightly)
    np.testing.assert_array_equal(label[:h, :w], lab[r0:r0 + h, c0:c0 + w])
    assert (label[:, w:] == 255).all() and not valid[:, w:].any() and valid[:h, :w].all()


def test_tile_dataset_applies_the_scene_standardization(ob_dataset):
    m = ob_dataset
    ds = TileDataset(m, "train", ["nir", "red"], Standardization("scene"))
    x, y, i = ds[0]
    assert x.shape == (2, 96, 96) and x.dtype == torch.float32 and y.dtype == torch.int64
    rec = ds.records[i]
    stats = m.scenes[rec["scene"]]["stats"]
    raw, _, valid = ds.load(i)
    expected = (raw[0] - stats["mean"][3]) / stats["std"][3]  # band 0 of the model is nir (dataset band 3)
    np.testing.assert_allclose(x[0].numpy()[valid], expected[valid], rtol=1e-5, atol=1e-5)
    assert (~valid).any()  # the chip is padded to the tile: the padding takes valid pixels' values, as in predict
    assert set(x[0].numpy()[~valid].tolist()) <= set(x[0].numpy()[valid].tolist())
    fixed = standardization_for(m, "fixed", m.band_indexes(["nir", "red"]))
    assert fixed.mean == pytest.approx([m.data["stats"]["train"]["mean"][i] for i in (3, 0)])
    with pytest.raises(DatasetError, match="no band role"):
        m.band_indexes(["swir1"])


def test_unlabelled_tiles_are_dropped_and_min_fraction(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    for sub in ("img", "lab"):
        (src / sub).mkdir(parents=True)
    rgb = np.asarray(Image.open(OB / "images_rgb" / "20190125T185649_20190125T185958_T10SEG-0.jpg"))
    label = np.full(rgb.shape[:2], 255, np.uint8)
    label[:40] = 2  # only the top tile has labels
    for i in range(3):
        Image.fromarray(rgb).save(src / "img" / f"2019010{i}_a.png")
        Image.fromarray(label).save(src / "lab" / f"2019010{i}_a.png")
    cfg = validate(DatasetConfig, {"sources": [{"kind": "folder", "labels": str(src / "lab"),
                                                "bands": [{"folder": str(src / "img"), "roles": ["r", "g", "b"]}]}],
                                   "tile_size": 64, "split": {"seed": 0}})
    m = make_dataset(cfg, tmp_path / "out")
    # 72-px-wide chips: two 64-px columns (0 and 8) of the top row; the unlabelled lower rows are dropped
    assert len(m.tiles()) == 6 and all(t["window"][0] == 0 for t in m.tiles())
    with pytest.raises(OutputExistsError):
        make_dataset(cfg, tmp_path / "out")
    # 40 of 64 rows labelled: 62.5 % of each remaining tile
    m2 = make_dataset(cfg.model_copy(update={"min_labelled_fraction": 0.6}), tmp_path / "out", overwrite=True)
    assert len(m2.tiles()) == 6
    with pytest.raises(DatasetError, match="no tile holds a labelled pixel"):
        make_dataset(cfg.model_copy(update={"min_labelled_fraction": 0.7}), tmp_path / "out", overwrite=True)


def test_missing_band_image_is_named(tmp_path):
    cfg = ob_config()
    cfg.sources[0].bands[1].stem_replace = []
    with pytest.raises(DatasetError, match="no image matches label"):
        make_dataset(cfg, tmp_path / "x")


# ------------------------------------------------------------------------------------------- GeoTIFF source


def _label_raster(scene: Path, path: Path) -> np.ndarray:
    with rasterio.open(scene) as ds:
        profile = {"driver": "GTiff", "height": ds.height, "width": ds.width, "count": 1, "dtype": "uint8",
                   "crs": ds.crs, "transform": ds.transform}
    label = np.full((profile["height"], profile["width"]), 255, np.uint8)
    label[:100, :] = 7  # an old class id remapped below
    label[100:150, :200] = 1
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(label, 1)
    return label


def test_scene_source_with_label_raster(tmp_path):
    scene = DATA / "s2_virginia_10m_6band_crop.tif"
    _label_raster(scene, tmp_path / "labels.tif")
    cfg = validate(DatasetConfig, {
        "sources": [{"kind": "scene", "scene": str(scene), "roles": ["blue", "green", "red", "nir"],
                     "bands": [1, 2, 3, 4], "labels": str(tmp_path / "labels.tif"), "name": "20160112_virginia"}],
        "tile_size": 128, "overlap": 0, "remap": {7: 0},
        "split": {"train": 1.0, "validation": 0.0, "test": 0.0, "group_by": "scene"}})
    m = make_dataset(cfg, tmp_path / "ds")
    s = m.scenes["20160112_virginia"]
    assert s["crs"] == "EPSG:32618" and s["transform"][0] == 10.0 and (s["height"], s["width"]) == (256, 320)
    # rows 0/128, cols 0/128/192 (the last pulled back); labels reach every tile
    assert sorted(tuple(t["window"][:2]) for t in m.tiles()) == [(r, c) for r in (0, 128) for c in (0, 128, 192)]
    total = np.sum([t["class_counts"] for t in m.tiles()], axis=0)
    assert total[0] > 0 and total[1] > 0 and total[2] == total[3] == 0
    with rasterio.open(scene) as ds:
        raw = ds.read([1, 2, 3, 4], window=((0, 128), (128, 256)))
    with np.load(m.path / next(t["file"] for t in m.tiles() if t["window"][:2] == [0, 128])) as z:
        np.testing.assert_array_equal(z["image"], raw.astype(np.float32))


def test_scene_source_with_label_polygons(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    scene = DATA / "s2_virginia_10m_6band_crop.tif"
    with rasterio.open(scene) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    polys = gpd.GeoDataFrame({"cls": [0, 2]}, geometry=[box(left, top - 500, left + 1000, top),
                                                         box(left, top - 1000, left + 1000, top - 500)], crs=crs)
    polys.to_crs(4326).to_file(tmp_path / "labels.gpkg")  # another CRS: reprojected onto the scene grid
    cfg = validate(DatasetConfig, {
        "sources": [{"kind": "scene", "scene": str(scene), "roles": ["blue", "green", "red"],
                     "labels": str(tmp_path / "labels.gpkg"), "class_field": "cls"}],
        "tile_size": 128, "split": {"train": 1.0, "validation": 0.0, "test": 0.0, "group_by": "scene"}})
    m = make_dataset(cfg, tmp_path / "ds")
    total = np.sum([t["class_counts"] for t in m.tiles()], axis=0)
    assert total[0] == pytest.approx(50 * 100, rel=0.05) and total[2] == pytest.approx(50 * 100, rel=0.05)
    assert all(t["window"][:2] == [0, 0] for t in m.tiles())
    with pytest.raises(DatasetError, match="no field 'klass'"):
        make_dataset(cfg.model_copy(update={"sources": [cfg.sources[0].model_copy(update={"class_field": "klass"})]}),
                     tmp_path / "ds2")


def test_stretch_mode_stores_pooled_stretched_stats_and_fills_scene_percentiles(ob_dataset):
    from eoseg.dataset import scene_standardization

    m = ob_dataset
    idx = m.band_indexes(["red", "nir"])
    template = standardization_for(m, "stretch", idx)
    assert template.mode == "stretch" and len(template.mean) == 2 and template.low is None
    sid, scene = next(iter(m.scenes.items()))
    filled = scene_standardization(template, scene, idx)
    assert filled.low == pytest.approx([scene["stats"]["p02"][i] for i in idx])
    assert filled.high == pytest.approx([scene["stats"]["p98"][i] for i in idx])
    assert filled.mean == template.mean  # the stored z-score stays; only the scene's percentiles change


def test_scene_source_maps_bands_as_predict_does(tmp_path, bundle_factory):
    """A red/green/blue dataset from the Sentinel-2 crop (B02 B03 B04 ...) holds B04, B03, B02, as predict reads."""
    from eoseg.predict import Predictor, PredictSettings

    scene = DATA / "s2_virginia_10m_6band_crop.tif"
    _label_raster(scene, tmp_path / "labels.tif")
    cfg = validate(DatasetConfig, {
        "sources": [{"kind": "scene", "scene": str(scene), "roles": ["red", "green", "blue"],
                     "labels": str(tmp_path / "labels.tif"), "name": "v"}],
        "tile_size": 128, "overlap": 0, "remap": {7: 0},
        "split": {"train": 1.0, "validation": 0.0, "test": 0.0, "group_by": "scene"}})
    m = make_dataset(cfg, tmp_path / "ds")
    record = m.scenes["v"]
    assert [(b["role"], b["band"], b["description"]) for b in record["bands"]] == [
        ("red", 3, "B04"), ("green", 2, "B03"), ("blue", 1, "B02")]
    with rasterio.open(scene) as ds:
        raw = ds.read([3, 2, 1], window=((0, 128), (0, 128)))
    with np.load(m.path / next(t["file"] for t in m.tiles() if t["window"][:2] == [0, 0])) as z:
        np.testing.assert_array_equal(z["image"], raw.astype(np.float32))
    predict_scene = Predictor(bundle_factory(tmp_path / "b", bands=("red", "green", "blue")),
                              PredictSettings(precision="fp32")).open(scene)
    assert [b["band"] for b in record["bands"]] == list(predict_scene.band_indexes)


def test_scene_source_records_scaling_and_reflectance_stats(tmp_path):
    from eoseg.torchdata import TileDataset

    scene = DATA / "s2_virginia_10m_6band_crop.tif"
    _label_raster(scene, tmp_path / "labels.tif")
    cfg = validate(DatasetConfig, {
        "sources": [{"kind": "scene", "scene": str(scene), "roles": ["blue", "green", "red", "nir", "swir1"],
                     "labels": str(tmp_path / "labels.tif"), "name": "v"}],
        "tile_size": 128, "overlap": 0, "remap": {7: 0},
        "split": {"train": 1.0, "validation": 0.0, "test": 0.0, "group_by": "scene"}})
    m = make_dataset(cfg, tmp_path / "ds")
    record = m.scenes["v"]
    assert record["scaling"]["source"] == "sentinel2" and record["scaling"]["scale"] == pytest.approx([1e-4] * 5)
    refl = record["stats"]["reflectance"]
    assert refl["mean"] == pytest.approx(np.array(record["stats"]["mean"]) / 1e4, rel=0.01)
    idx = m.band_indexes(["red", "swir1"])
    template = standardization_for(m, "reflectance", idx)
    assert template.mean == pytest.approx(tuple(refl["mean"][i] for i in idx))
    ds = TileDataset(m, "train", ["red", "swir1"], template)
    image, _, valid = ds.load(0)
    x = ds[0][0].numpy()
    expected = (np.clip(image / 1e4, -0.1, 1.5) - np.reshape(template.mean, (2, 1, 1))) / np.reshape(template.std,
                                                                                                      (2, 1, 1))
    np.testing.assert_allclose(x[:, valid], expected[:, valid], rtol=1e-5, atol=1e-5)
    # log-reflectance: the statistics of ln(max(r, 0) + 0.01), and the same transform when reading tiles
    logs = standardization_for(m, "log-reflectance", idx)
    assert logs.mean == pytest.approx(tuple(record["stats"]["log_reflectance"]["mean"][i] for i in idx))
    with rasterio.open(scene) as src:
        whole = np.clip(src.read([1, 2, 3, 4, 5]).astype(np.float64) / 1e4, -0.1, 1.5)
    assert record["stats"]["log_reflectance"]["mean"] == pytest.approx(
        np.log(np.maximum(whole, 0) + 0.01).mean(axis=(1, 2)), abs=1e-4)
    r = np.clip(image / 1e4, -0.1, 1.5)[:, valid]
    x = TileDataset(m, "train", ["red", "swir1"], logs)[0][0].numpy()
    expected = (np.log(np.maximum(r, 0) + 0.01) - np.reshape(logs.mean, (2, 1))) / np.reshape(logs.std, (2, 1))
    np.testing.assert_allclose(x[:, valid], expected, rtol=1e-4, atol=1e-4)
    del m.data["stats"]["train"]["log_reflectance_mean"]  # a dataset built before eoseg had these statistics
    with pytest.raises(DatasetError, match="rebuild"):
        standardization_for(m, "log-reflectance", idx)
    # units unknown: a reflectance model cannot be trained on it
    unknown = cfg.model_copy(update={"sources": [cfg.sources[0].model_copy(
        update={"scene": DATA / "l8_collar_crop.tif", "roles": ["red", "green", "blue"]})]})
    _label_raster(DATA / "l8_collar_crop.tif", tmp_path / "labels.tif")
    m2 = make_dataset(unknown, tmp_path / "ds2")
    assert "cannot tell the units" in m2.scenes["v"]["scaling"]["error"]
    with pytest.raises(DatasetError, match="units"):
        standardization_for(m2, "reflectance", [0, 1, 2])
    scaled = make_dataset(unknown.model_copy(update={"sources": [unknown.sources[0].model_copy(
        update={"scale": 2e-5, "offset": -0.1})]}), tmp_path / "ds3")
    assert scaled.scenes["v"]["scaling"]["source"] == "user"


def test_building_datasets_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, eoseg.dataset, eoseg.config, eoseg.radiometry; from eoseg.dataset import make_dataset; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
