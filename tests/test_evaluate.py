"""eoseg evaluate: a bundle over a whole split (each pixel once), and a class raster vs a label raster."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from eoseg.classes import COASTAL
from eoseg.config import DatasetConfig, validate
from eoseg.dataset import load_manifest, make_dataset
from eoseg.errors import BundleError, DatasetError, OutputExistsError
from eoseg.evaluate import evaluate_bundle, evaluate_rasters, model_scheme
from eoseg.metrics import confusion_matrix

OB = Path(__file__).parent / "data" / "ocean_beach"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cfg = validate(DatasetConfig, {
        "sources": [{"kind": "folder", "labels": str(OB / "labels"), "bands": [
            {"folder": str(OB / "images_rgb"), "roles": ["red", "green", "blue"]},
            {"folder": str(OB / "images_nir"), "roles": ["nir"], "stem_replace": [["_ir-", "-"]]}]}],
        "tile_size": 64, "overlap": 16,  # overlapping tiles: pixels must still count once
        "split": {"train": 0.34, "validation": 0.33, "test": 0.33, "seed": 0}})
    return make_dataset(cfg, tmp_path_factory.mktemp("ev") / "ds").path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import torch

    from eoseg.bundle import ModelCard, save_bundle
    from eoseg.models import build_model

    torch.manual_seed(0)
    model = build_model("resunet", 3, 4, filters=4).eval()
    card = ModelCard(name="tiny", arch="resunet", arch_params={"filters": 4}, bands=("nir", "red", "green"),
                     standardization={"mode": "scene", "mean": None, "std": None}, tile_size=64, overlap=8)
    return save_bundle(model, card, tmp_path_factory.mktemp("ev") / "bundle")


def test_bundle_over_whole_split_counts_each_pixel_once(bundle, data, tmp_path):
    from PIL import Image

    report = evaluate_bundle(bundle, data, "test", out_dir=tmp_path / "rep")
    m = load_manifest(data)
    test_scenes = [s for s, v in m.scenes.items() if v["split"] == "test"]
    labelled = sum(int((np.asarray(Image.open(OB / "labels" / f"{s}.png")) != 255).sum()) for s in test_scenes)
    assert report.metrics["pixels"] == labelled == report.confusion.sum()
    assert report.info["tiles"] == len(m.tiles("test")) > len(test_scenes)
    assert {r["sample"] for r in report.per_sample} == set(test_scenes)
    assert sum(r["pixels"] for r in report.per_sample) == labelled
    for key in ("overall_accuracy", "mean_iou", "dice", "frequency_weighted_iou", "mcc", "kld"):
        assert np.isfinite(report.metrics[key]), key
    assert report.metrics["kld_kind"] == "pixel"
    files = {p.name for p in (tmp_path / "rep").iterdir()}
    assert files == {"metrics.json", "confusion_matrix.csv", "confusion_matrix.png", "per_sample.csv"}
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["metrics"]["pixels"] == labelled and saved["split"] == "test"
    rows = list(csv.reader((tmp_path / "rep" / "confusion_matrix.csv").open()))
    assert rows[0][1:] == ["water", "whitewater", "sand", "other"]
    with pytest.raises(OutputExistsError):
        evaluate_bundle(bundle, data, "test", out_dir=tmp_path / "rep")
    with pytest.raises(DatasetError, match="unknown split"):
        evaluate_bundle(bundle, data, "holdout")


def test_a_model_with_another_number_of_classes_is_refused_before_scoring(data):
    manifest = load_manifest(data)
    assert model_scheme(COASTAL.to_dict(), manifest, None).names == COASTAL.names
    two = {"classes": [{"id": 0, "name": "water", "colour": "#0000ff"}, {"id": 1, "name": "land", "colour": "#00ff00"}]}
    with pytest.raises(BundleError, match="predicts 2 classes but the dataset has 4"):
        model_scheme(two, manifest, "model-dir")


def _write(path: Path, array: np.ndarray, nodata=None) -> Path:
    profile = {"driver": "GTiff", "height": array.shape[0], "width": array.shape[1], "count": 1,
               "dtype": "uint8", "crs": "EPSG:32610", "transform": Affine(10, 0, 500000, 0, -10, 4200000),
               "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return path


def test_rasters_by_hand(tmp_path):
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 3], [3, 3, 3, 3]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 3, 255], [3, 3, 2, 3]], dtype=np.uint8)
    report = evaluate_rasters(_write(tmp_path / "p.tif", pred, 255), _write(tmp_path / "t.tif", truth),
                              out_dir=tmp_path / "rep")
    keep = (truth != 255) & (pred != 255)
    np.testing.assert_array_equal(report.confusion, confusion_matrix(truth[keep], pred[keep], 4))
    assert report.metrics["pixels"] == 10 and report.info["labelled_pixels_without_prediction"] == 1
    assert report.metrics["overall_accuracy"] == pytest.approx(7 / 10)
    assert report.metrics["per_class"]["water"]["iou"] == pytest.approx(1 / 3)  # TP 1, FP 1, FN 1
    assert report.metrics["kld_kind"] == "class_distribution"
    assert (tmp_path / "rep" / "confusion_matrix.png").stat().st_size > 0


def test_rasters_must_share_a_grid(tmp_path):
    a = _write(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    b = _write(tmp_path / "b.tif", np.zeros((4, 5), np.uint8))
    with pytest.raises(DatasetError, match="4 × 4 but labels are 4 × 5"):
        evaluate_rasters(a, b)
    with pytest.raises(DatasetError, match="does not exist"):
        evaluate_rasters(tmp_path / "none.tif", b)


def test_confusion_plot_leaves_the_matplotlib_backend_alone(tmp_path, monkeypatch):
    import matplotlib

    from eoseg.evaluate import plot_confusion

    switches = []
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: switches.append(a))
    plot_confusion(np.array([[5, 1], [0, 4]]), ["water", "sand"], tmp_path / "cm.png")
    assert switches == [] and (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
