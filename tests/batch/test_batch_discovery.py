"""eoseg.batch.discovery: directories, globs and manifests of scenes; clashes, missing and empty inputs."""

from __future__ import annotations

import pytest
from batch_helpers import crop

from eoseg.batch import (
    discover_scenes,
)
from eoseg.errors import ConfigError


def test_discover_directories_globs_and_manifests(tmp_path, s2_scene):
    arch = tmp_path / "arch"
    a = crop(s2_scene, arch / "a.tif")
    b = crop(s2_scene, arch / "2019" / "b.TIF")
    crop(s2_scene, arch / ".cache" / "hidden.tif")
    (arch / "notes.txt").write_text("not a scene")
    out = arch / "results"
    crop(s2_scene, out / "a_classes.tif")  # earlier outputs under the input folder are not inputs

    jobs = discover_scenes([arch], exclude=out)
    assert [(j.path, str(j.relpath)) for j in jobs] == [(b, "2019/b.TIF"), (a, "a.tif")]
    assert jobs[0].out_dir(out) == out / "2019" and jobs[0].record_path(out) == out / "2019" / "b.done.json"

    globbed = discover_scenes([str(arch / "*" / "*.TIF")])
    assert [str(j.relpath) for j in globbed] == ["2019/b.TIF"]

    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# scenes\n{a}\n\narch/2019/b.TIF\n")
    assert [str(j.relpath) for j in discover_scenes([manifest])] == ["a.tif", "2019/b.TIF"]
    table = tmp_path / "list.csv"
    table.write_text(f"date,path\n2016-01-01,{a}\n2019-01-01,arch/2019/b.TIF\n")
    assert [j.path for j in discover_scenes([table, a])] == [a, b]  # a scene named twice is kept once


def test_discover_refuses_clashes_missing_and_empty(tmp_path, s2_scene):
    one = crop(s2_scene, tmp_path / "x" / "scene.tif")
    two = crop(s2_scene, tmp_path / "y" / "scene.tif")
    with pytest.raises(ConfigError, match="same outputs") as clash:
        discover_scenes([tmp_path / "x", tmp_path / "y"])
    assert "common parent" in str(clash.value)
    assert len(discover_scenes([tmp_path])) == 2 and {one, two} == {j.path for j in discover_scenes([tmp_path])}
    with pytest.raises(ConfigError, match="does not exist"):
        discover_scenes([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no scenes found"):
        discover_scenes([tmp_path / "empty"])
    bad_manifest = tmp_path / "m.txt"
    bad_manifest.write_text("nowhere.tif\n")
    with pytest.raises(ConfigError, match="manifest entry"):
        discover_scenes([bad_manifest])
