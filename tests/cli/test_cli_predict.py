"""The eoseg CLI end to end: success, and one-line errors with the right exit codes."""

import os
import shutil

import numpy as np
import rasterio
import rasterio.shutil
from click.testing import CliRunner

from eoseg.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *needles):
    lines = [line for line in result.output.splitlines() if line.strip()]
    err = [line for line in lines if line.startswith("eoseg: error:")]
    assert len(err) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def test_predict_writes_outputs_and_summary(s2_scene, random_bundle, tmp_path):
    result = run("predict", s2_scene, "--model", random_bundle, "--out", tmp_path, "--precision", "fp32", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s2_virginia_10m_6band_crop_classes.tif").exists()
    assert (tmp_path / "s2_virginia_10m_6band_crop_classes.qml").exists()
    assert (tmp_path / "s2_virginia_10m_6band_crop_polygons.gpkg").exists()
    assert (tmp_path / "s2_virginia_10m_6band_crop.stac.json").exists()
    loud = run("predict", s2_scene, "--model", random_bundle, "--out", tmp_path, "--overwrite", "--precision", "fp32")
    assert loud.exit_code == 0 and "MP/s" in loud.output and "tiles" in loud.output


def test_bands_option_and_ungeoreferenced_flag(nocrs_scene, random_bundle, tmp_path):
    refused = run("predict", nocrs_scene, "--model", random_bundle, "--out", tmp_path)
    assert refused.exit_code == 1
    one_line_error(refused, str(nocrs_scene), "no CRS", "--allow-ungeoreferenced")
    ok = run("predict", nocrs_scene, "--model", random_bundle, "--out", tmp_path, "--allow-ungeoreferenced",
             "--bands", "1,2,3,4", "-q")
    assert ok.exit_code == 0, ok.output
    with rasterio.open(tmp_path / "s2_no_crs_crop_ms_classes.tif") as ds:
        assert ds.crs is None and ds.shape == (96, 96)


def test_bad_inputs_fail_with_one_line(s2_scene, collar_scene, random_bundle, tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    text = tmp_path / "readme.tif"
    text.write_text("not a raster")
    truncated = tmp_path / "truncated.tif"
    rasterio.shutil.copy(s2_scene, truncated, driver="COG", blocksize=128)
    with open(truncated, "r+b") as f:
        f.truncate(int(os.path.getsize(truncated) * 0.6))
    blank = tmp_path / "blank.tif"
    with rasterio.open(s2_scene) as src:
        profile = src.profile
        descriptions = src.descriptions
    with rasterio.open(blank, "w", **profile) as dst:
        dst.write(np.zeros((profile["count"], profile["height"], profile["width"]), profile["dtype"]))
        dst.descriptions = descriptions
    cases = [(empty, "empty"), (text, "not a raster"), (truncated, "truncated"), (blank, "no valid pixels"),
             (collar_scene, "cannot find band(s) nir")]
    for path, needle in cases:
        out = tmp_path / f"out_{path.stem}"
        result = run("predict", path, "--model", random_bundle, "--out", out, "-q")
        assert result.exit_code == 1, (path, result.output)
        one_line_error(result, str(path), needle)
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_existing_output_and_unwritable_directory(s2_scene, random_bundle, tmp_path):
    assert run("predict", s2_scene, "--model", random_bundle, "--out", tmp_path, "-q").exit_code == 0
    again = run("predict", s2_scene, "--model", random_bundle, "--out", tmp_path, "-q")
    assert again.exit_code == 1
    one_line_error(again, "exists", "--overwrite")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    bad = run("predict", s2_scene, "--model", random_bundle, "--out", blocker / "sub", "-q")
    assert bad.exit_code == 1
    one_line_error(bad, str(blocker / "sub"))


def test_usage_errors_exit_2(s2_scene, random_bundle, tmp_path):
    result = run("predict", s2_scene, "--model", random_bundle, "--out", tmp_path, "--tile-size", "100")
    assert result.exit_code == 2
    one_line_error(result, "multiple of 32")
    unknown = run("predict", s2_scene, "--model", "no-such-model", "--out", tmp_path)
    assert unknown.exit_code == 2
    one_line_error(unknown, "no-such-model")
    assert run("predict", s2_scene, "--out", tmp_path, "--tta", "sideways").exit_code == 2


def test_verbose_shows_traceback(tmp_path, random_bundle):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    result = run("--verbose", "predict", empty, "--model", random_bundle, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "Traceback" in result.output


def test_tile_command_writes_tiles_labels_and_index(s2_scene, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    with rasterio.open(s2_scene) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    # tile columns start at 0, 960 and 1920 m: labels from 1300 m on leave the first column unlabelled
    geometry = [box(left + 1800, bottom, right, top), box(left + 1300, bottom, left + 1800, top)]
    polys = gpd.GeoDataFrame({"class": [0, 2]}, geometry=geometry, crs=crs)
    labels = tmp_path / "labels.gpkg"
    polys.to_file(labels)
    result = run("tile", s2_scene, "--size", "128", "--overlap", "32", "--out", tmp_path / "t", "--labels", labels,
                 "--label-field", "class")
    assert result.exit_code == 0, result.output
    index = gpd.read_file(tmp_path / "t" / "index.gpkg")
    assert {"id", "image", "label", "valid_fraction"} <= set(index.columns)
    assert len(index) == 6  # the three unlabelled tiles of the first column are skipped
    first = index.iloc[0]
    with rasterio.open(tmp_path / "t" / first["image"]) as img, rasterio.open(tmp_path / "t" / first["label"]) as lab:
        assert img.crs == crs and img.count == 6 and img.descriptions[0] == "B02"
        assert box(*img.bounds).equals(index.geometry.iloc[0])
        values = set(np.unique(lab.read(1)))
        assert values <= {0, 2, 255}
    keep = run("tile", s2_scene, "--size", "128", "--out", tmp_path / "t", "--overwrite", "--keep-empty")
    assert keep.exit_code == 0
    assert len(gpd.read_file(tmp_path / "t" / "index.gpkg")) == 9
    refuse = run("tile", s2_scene, "--size", "128", "--out", tmp_path / "t")
    assert refuse.exit_code == 1
    shutil.rmtree(tmp_path / "t")


def test_scale_option_for_reflectance_models(collar_scene, bundle_factory, tmp_path):
    bundle = bundle_factory(tmp_path / "rgb", bands=("red", "green", "blue"), mode="reflectance",
                            mean=(0.1, 0.1, 0.1), std=(0.1, 0.1, 0.1))
    refused = run("predict", collar_scene, "--model", bundle, "--out", tmp_path / "a", "--precision", "fp32")
    assert refused.exit_code == 2
    one_line_error(refused, "cannot tell the units", "--scale")
    ok = run("predict", collar_scene, "--model", bundle, "--out", tmp_path / "b", "--precision", "fp32",
             "--scale", "2e-5", "--offset", "-0.1")
    assert ok.exit_code == 0, ok.output
    assert "reflectance ×2e-05 +-0.1 (user)" in ok.output and "red=3:B4" in ok.output
