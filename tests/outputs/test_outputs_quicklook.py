"""Quicklook PNG: written without touching the caller's matplotlib backend or pyplot state."""

from __future__ import annotations

import sys

import matplotlib
import numpy as np
import rasterio

from eoseg.classes import COASTAL
from eoseg.outputs.quicklook import write_quicklook


def _classes_like(scene, path):
    with rasterio.open(scene) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": 255}
    values = (np.arange(profile["height"] * profile["width"]) % 4).reshape(profile["height"], profile["width"])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(np.uint8), 1)
    return path


def test_quicklook_leaves_the_matplotlib_backend_alone(s2_scene, tmp_path, monkeypatch):
    switches = []
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: switches.append(a))
    backend = dict.__getitem__(matplotlib.rcParams, "backend")  # without resolving it
    classes = _classes_like(s2_scene, tmp_path / "classes.tif")
    png = write_quicklook(s2_scene, classes, tmp_path / "quicklook.png", COASTAL, title="test")
    assert switches == [] and dict.__getitem__(matplotlib.rcParams, "backend") == backend
    if "matplotlib.pyplot" in sys.modules:  # no figure left open in the user's pyplot
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_false_colour_panel_only_where_the_scene_has_swir(s2_scene, collar_scene, tmp_path):
    from PIL import Image

    from eoseg.outputs.quicklook import _false_colour

    assert _false_colour(collar_scene, (30, 40)) is None  # Landsat B2 B3 B4: no SWIR1 / NIR
    false = _false_colour(s2_scene, (32, 40))
    assert false is not None and false.shape == (32, 40, 3)
    widths = {}
    for name, scene in (("s2", s2_scene), ("collar", collar_scene)):
        classes = _classes_like(scene, tmp_path / f"{name}_classes.tif")
        png = write_quicklook(scene, classes, tmp_path / f"{name}.png", COASTAL)
        with Image.open(png) as image:
            widths[name] = image.width / image.height
    assert widths["s2"] > widths["collar"] * 1.2  # three panels against two
