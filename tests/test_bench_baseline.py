"""bench/baseline.py: per-pixel features, scene reassembly (each pixel once), the random forest and the card update,
on the six Ocean Beach chips in tests/data (one date per split)."""

import json
from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

from eoseg.config import DatasetConfig, validate
from eoseg.dataset import make_dataset, read_label

OB = Path(__file__).parent / "data" / "ocean_beach"
SMALL = {"n_estimators": 10, "max_depth": 12, "n_jobs": 1, "max_train_pixels": 10_000}


bl = load_script("bench_baseline", "bench/baseline.py")


@pytest.fixture(scope="module")
def ob(tmp_path_factory):
    cfg = validate(DatasetConfig, {
        "sources": [{"kind": "folder", "labels": str(OB / "labels"), "bands": [
            {"folder": str(OB / "images_rgb"), "roles": ["red", "green", "blue"]},
            {"folder": str(OB / "images_nir"), "roles": ["nir"], "stem_replace": [["_ir-", "-"]]},
        ]}],
        "tile_size": 96,
        "split": {"train": 0.34, "validation": 0.33, "test": 0.33, "seed": 0, "group_by": "date"},
    })
    return make_dataset(cfg, tmp_path_factory.mktemp("ds") / "ob")


def test_features_by_hand():
    red, green, blue, nir = (np.full((4, 5), v, np.float32) for v in (30, 60, 10, 20))
    nir[2, 2] = 40  # one bright NIR pixel: texture around it, zero far from it
    image = np.stack([red, green, blue, nir])
    roles = ["red", "green", "blue", "nir"]
    f = bl.pixel_features(image, roles, roles)
    names = bl.feature_names(roles)
    assert names == ["red", "green", "blue", "nir", "ndwi", "ndvi", "rbi", "brightness",
                     "std3_red", "std3_green", "std3_blue", "std3_nir", "std3_brightness"]
    assert f.shape == (4, 5, 13) and f.dtype == np.float32 and np.isfinite(f).all()
    at = {n: f[0, 0, i] for i, n in enumerate(names)}
    assert at["ndwi"] == pytest.approx((60 - 20) / 80) and at["ndvi"] == pytest.approx((20 - 30) / 50)
    assert at["rbi"] == pytest.approx(20 / 40) and at["brightness"] == pytest.approx(30)
    assert at["std3_red"] == pytest.approx(0, abs=1e-4) and at["std3_nir"] == pytest.approx(0, abs=1e-4)
    window = np.full(9, 20.0)
    window[4] = 40
    assert f[1, 1, names.index("std3_nir")] == pytest.approx(window.std(), rel=1e-4)
    # RGB only: no index that needs NIR; a zero denominator gives 0; invalid pixels take the band's valid mean
    rgb = bl.feature_names(["red", "green", "blue"])
    assert rgb == ["red", "green", "blue", "rbi", "brightness", "std3_red", "std3_green", "std3_blue",
                   "std3_brightness"]
    image[0, 0, 0] = image[2, 0, 0] = 0
    valid = np.ones((4, 5), bool)
    valid[3, 4] = False
    image[:, 3, 4] = 1e6
    g = bl.pixel_features(image, roles, ["red", "green", "blue"], valid)
    assert g.shape == (4, 5, 9) and g[0, 0, rgb.index("rbi")] == 0
    assert g[3, 4, 0] == pytest.approx(image[0][valid].mean())
    with pytest.raises(ValueError, match="nir"):
        bl.pixel_features(image[:3], ["red", "green", "blue"], roles)


def test_scenes_count_every_labelled_pixel_once(ob):
    total = 0
    for split in ("train", "validation", "test"):
        scenes = bl.load_scenes(ob, split)
        assert len(scenes) == 2
        for s in scenes:
            label = read_label(OB / "labels" / f"{s.name}.png")
            assert s.image.shape == (4, *label.shape) and s.valid.all()  # the overlapping tiles cover the whole chip
            np.testing.assert_array_equal(s.label, label)
            total += int(s.scored.sum())
        x, y = bl.labelled_pixels(scenes, ob.roles, ["red", "green", "blue"])
        assert x.shape == (sum(int(s.scored.sum()) for s in scenes), 9) and len(y) == len(x)
    tile_counts = sum(sum(t["class_counts"]) for t in ob.tiles())
    assert 0 < total < tile_counts  # rows 57..95 sit in two tiles but count once
    xs, ys = bl.subsample(np.arange(100)[:, None], np.arange(100), 30, seed=0)
    assert len(ys) == 30 and len(set(ys.tolist())) == 30 and (np.diff(ys) > 0).all()
    np.testing.assert_array_equal(bl.subsample(xs, ys, 30, seed=1)[1], ys)


def test_forest_beats_chance_and_is_seeded(ob):
    a = bl.run_forest(ob, "test", ["red", "green", "blue", "nir"], seed=0, **SMALL)
    b = bl.run_forest(ob, "test", ["red", "green", "blue", "nir"], seed=0, class_weight=str(a.class_weight).lower(),
                      **SMALL)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert set(a.selection) == {"none", "balanced"} and a.class_weight in (None, "balanced")
    assert a.selection[str(a.class_weight).lower()] == max(a.selection.values())
    assert a.metrics["pixels"] == sum(int(s.scored.sum()) for s in bl.load_scenes(ob, "test"))
    assert a.confusion.sum() == a.metrics["pixels"] and a.train_pixels == SMALL["max_train_pixels"]
    assert a.metrics["mean_iou"] > 0.4 and a.metrics["overall_accuracy"] > 0.7
    assert len(a.features) == 13 and set(a.to_dict()) >= {"metrics", "confusion_matrix", "train_seconds"}


def test_compare_and_write_card(ob, tmp_path, bundle_factory):
    bundle = bundle_factory(tmp_path / "b", bands=("red", "green", "blue"), tile_size=96, overlap=0)
    weights = (bundle / "model.safetensors").read_bytes()
    card_before = json.loads((bundle / "card.json").read_text())
    result = bl.compare(ob.path, bundle, "test", seed=0, class_weight="none", device="cpu", **SMALL)
    model = result["model_result"]["metrics"]
    assert model["pixels"] == result["random_forest"]["metrics"]["pixels"]  # same pixels scored
    assert result["comparable_with_model"] == ["random_forest_rgb"] and len(result["dates"]) == 1
    entries = result["card_entries"]
    assert set(entries) == {"test", "baseline_random_forest", "baseline_random_forest_rgb"}
    assert entries["test"]["mean_iou"] == model["mean_iou"] and entries["test"]["split"] == "test"
    assert set(entries["test"]["iou"]) == {"water", "whitewater", "sand", "other"}
    rf = entries["baseline_random_forest"]
    assert rf["n_estimators"] == 10 and len(rf["features"]) == 13 and rf["dates"] == result["dates"]
    json.dumps(result, default=float)

    bl.write_card_metrics(bundle, {"validation": {"mean_iou": 0.5}})  # an earlier entry survives the next write
    bl.write_card_metrics(bundle, entries)
    card = json.loads((bundle / "card.json").read_text())
    assert {k: v for k, v in card.items() if k != "metrics"} == {k: v for k, v in card_before.items()
                                                                  if k != "metrics"}
    assert set(card["metrics"]) == {"validation", *entries}
    assert (bundle / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in bundle.iterdir()) == ["card.json", "model.safetensors"]  # no temp file left

    with pytest.raises(RuntimeError, match="other weights"):
        bl.write_card_metrics(bundle, entries, expect_weights="0" * 64)
    bl.write_card_metrics(bundle, entries, expect_weights=result["model_weights_sha256"])

    from eoseg.bundle import load_bundle

    assert load_bundle(bundle).card.metrics["baseline_random_forest"]["mean_iou"] == rf["mean_iou"]
