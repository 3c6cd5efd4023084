"""eoseg label at the command line: outputs and summary, warnings, one-line errors with exit 1."""

import geopandas as gpd
import rasterio
from click.testing import CliRunner
from shapely.geometry import LineString

from eoseg.cli import main

# (class, pixel (col, row) vertices) on tests/data/s2_virginia_10m_6band_crop.tif; see tests/test_strokes.py
STROKES = [
    ("sand", [(134.5, 50), (120.5, 100), (109.5, 150), (98.5, 200)]),
    ("sand", [(89, 240), (86, 250)]),
    ("surf", [(144.5, 30), (141.5, 60)]),
    ("surf", [(113.5, 190), (111.5, 200)]),
    ("water", [(200, 20), (280, 230)]),
    ("water", [(170, 100), (170, 200)]),
    ("other", [(95, 30), (100, 90)]),
    ("other", [(60, 100), (75, 115)]),
]


def write_strokes(path, scene_path, strokes=STROKES):
    with rasterio.open(scene_path) as ds:
        lines = [LineString([ds.transform * p for p in points]) for _, points in strokes]
        gpd.GeoDataFrame({"class": [c for c, _ in strokes]}, geometry=lines, crs=ds.crs).to_file(path)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("eoseg: error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_label_writes_outputs_and_reports(s2_scene, tmp_path):
    strokes = write_strokes(tmp_path / "strokes.gpkg", s2_scene)
    out = tmp_path / "out"
    result = run("label", s2_scene, strokes, "--out", out, "--stroke-width", "2", "--threshold", "0.6")
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output and "ignore" in result.output and "sand" in result.output
    stem = "s2_virginia_10m_6band_crop_labels"
    for suffix in (".tif", ".qml", ".png", ".json", ".tif.aux.xml"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    with rasterio.open(out / f"{stem}.tif") as ds, rasterio.open(s2_scene) as src:
        assert ds.transform == src.transform and ds.crs == src.crs
    again = run("label", s2_scene, strokes, "--out", out)
    assert again.exit_code == 1 and "--overwrite" in error_line(again)
    assert run("label", s2_scene, strokes, "--out", out, "--overwrite", "-q", "--no-quicklook").exit_code == 0


def test_label_errors_and_warnings(s2_scene, tmp_path):
    strokes = write_strokes(tmp_path / "strokes.gpkg", s2_scene)
    wrong_field = run("label", s2_scene, strokes, "--out", tmp_path / "a", "--field", "kind")
    assert wrong_field.exit_code == 1
    assert "no field 'kind'" in error_line(wrong_field) and "--field" in error_line(wrong_field)
    bad = write_strokes(tmp_path / "bad.gpkg", s2_scene, STROKES + [("mud", [(1, 1), (5, 5)])])
    unknown = run("label", s2_scene, bad, "--out", tmp_path / "b")
    assert unknown.exit_code == 1 and "'mud'" in error_line(unknown)
    bands = run("label", s2_scene, strokes, "--out", tmp_path / "c", "--bands", "1,9")
    assert bands.exit_code == 1 and "band index 9" in error_line(bands)
    window = run("label", s2_scene, strokes, "--out", tmp_path / "e", "--window", "1,2,3")
    assert window.exit_code == 2 and "COL,ROW,WIDTH,HEIGHT" in window.output
    outside = run("label", s2_scene, strokes, "--out", tmp_path / "f", "--window", "0,250,320,100")
    assert outside.exit_code == 1 and "not inside" in error_line(outside)
    no_surf = write_strokes(tmp_path / "no_surf.gpkg", s2_scene, [s for s in STROKES if s[0] in ("sand", "water")])
    warned = run("label", s2_scene, no_surf, "--out", tmp_path / "d", "-q", "--no-quicklook")
    assert warned.exit_code == 0, warned.output
    assert "eoseg: warning:" in warned.output and "no strokes for whitewater, other" in warned.output
