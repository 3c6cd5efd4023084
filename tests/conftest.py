"""Shared fixtures: paths to the tiny real rasters in tests/data, offline model hubs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def s2_scene() -> Path:
    """Sentinel-2 10 m crop (Virginia): B02 B03 B04 B08 B11 B12, uint16, nodata 0."""
    return DATA / "s2_virginia_10m_6band_crop.tif"


@pytest.fixture(scope="session")
def klamath_scene() -> Path:
    """Landsat 8 TOA float32, -inf nodata, CoastSat '_ms' layout (no band descriptions)."""
    return DATA / "l8_klamath_crop_ms.tif"


@pytest.fixture(scope="session")
def collar_scene() -> Path:
    """Landsat 8 DN with the slanted nodata collar of a whole-scene footprint."""
    return DATA / "l8_collar_crop.tif"


@pytest.fixture(scope="session")
def nocrs_scene() -> Path:
    """Sentinel-2 crop without CRS or geotransform."""
    return DATA / "s2_no_crs_crop_ms.tif"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared/data is not present")
    return SHARED


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_bundle(directory: Path, bands=("blue", "green", "red", "nir"), tile_size=128, overlap=32, filters=4,
                seed=0, mode="scene", mean=None, std=None, **card_fields) -> Path:
    """A Res-UNet bundle with random (seeded) weights: enough to exercise every path of predict.

    ``card_fields`` are further ModelCard fields (name, metrics, resolution_m, ...).
    """
    import torch

    from eoseg.bundle import ModelCard, save_bundle
    from eoseg.models import build_model

    torch.manual_seed(seed)
    params = {"filters": filters}
    model = build_model("resunet", in_channels=len(bands), num_classes=4, **params)
    card_fields.setdefault("name", f"random-resunet-{seed}")
    card = ModelCard(arch="resunet", bands=tuple(bands), arch_params=params,
                     standardization={"mode": mode, "mean": mean, "std": std}, tile_size=tile_size,
                     overlap=overlap, **{"description": "random weights for tests", **card_fields})
    save_bundle(model.eval(), card, directory)
    return directory


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "rgbn")


@pytest.fixture(scope="session")
def random_rgb_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "rgb", bands=("red", "green", "blue"))


@pytest.fixture(scope="session")
def bundle_factory():
    """``make_bundle(directory, **options)``: random-weight bundles with chosen bands, tiles and seeds."""
    return make_bundle


FIVE_BANDS = ("blue", "green", "red", "nir", "swir1")


@pytest.fixture(scope="session")
def packaged_pair(tmp_path_factory) -> Path:
    """A stand-in for eoseg/weights: ``resunet`` (five reflectance bands) and ``resunet-rgb`` (RGB, stretch).

    Monkeypatch ``eoseg.bundle.weights_dir`` to return it.
    """
    root = tmp_path_factory.mktemp("weights")
    make_bundle(root / "resunet", bands=FIVE_BANDS, mode="reflectance", mean=(0.1,) * 5, std=(0.1,) * 5,
                name="resunet", resolution_m=(10, 30),
                metrics={"validation": {"mean_iou": 0.81},
                         "held_out_sites": {"dense": {"coastal sites": {"miou": 0.78}, "virginia": {"miou": 0.7}},
                                            "strokes": {"coastal sites": {"miou": 0.9}},
                                            "points": {"coastal sites": {"miou": 0.76, "points": 330}},
                                            "peers_miou": {"coastsat": {"dense": 0.7, "strokes": 0.8}}}})
    make_bundle(root / "resunet-rgb", bands=("red", "green", "blue"), mode="stretch", mean=(0.3,) * 3,
                std=(0.25,) * 3, name="resunet-rgb", resolution_m=(10, 10), metrics={"test": {"mean_iou": 0.74}})
    return root
