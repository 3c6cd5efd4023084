"""plan_outputs, atomic_write and cleanup_temporaries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from eoseg.errors import OutputError, OutputExistsError
from eoseg.outputs.atomic import (
    atomic_write,
    cleanup_temporaries,
    pid_runs,
    plan_outputs,
    remove_dead_temporaries,
    remove_written,
    temporaries,
    temporary_path,
    write_journal,
)


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory writes fail in: chmod 0o500 where that blocks writes; a path under a file for root."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        (locked / "probe").write_bytes(b"x")
    except PermissionError:
        return locked
    (locked / "probe").unlink()  # root (or CAP_DAC_OVERRIDE): permissions do not block writes
    locked.chmod(0o700)
    blocker = tmp_path / "a_regular_file"
    blocker.write_text("not a directory")
    return blocker / "sub"


def test_plan_names_and_creates_the_directory(tmp_path):
    out = tmp_path / "nested" / "out"
    plan = plan_outputs(out, "scene", probabilities=True, overwrite=False)
    assert out.is_dir()
    assert plan.classes.name == "scene_classes.tif"
    assert plan.classes_aux.name == "scene_classes.tif.aux.xml"
    assert plan.qml.name == "scene_classes.qml"
    assert plan.probs.name == "scene_probs.tif"
    assert plan.polygons.name == "scene_polygons.gpkg"
    assert plan.stac.name == "scene.stac.json"
    assert all(p.parent == out for p in plan.files())
    assert list(out.iterdir()) == []  # the write probe is gone


def test_plan_without_probabilities(tmp_path):
    plan = plan_outputs(tmp_path, "s", probabilities=False, overwrite=False)
    assert plan.probs is None
    assert "probabilities" not in plan.assets()
    assert set(plan.assets()) == {"classes", "classes_metadata", "classes_style", "polygons"}


def test_plan_refuses_an_existing_output_and_leaves_it_untouched(tmp_path):
    existing = tmp_path / "s_polygons.gpkg"
    existing.write_bytes(b"precious")
    before = existing.stat().st_mtime_ns
    with pytest.raises(OutputExistsError) as info:
        plan_outputs(tmp_path, "s", probabilities=True, overwrite=False)
    err = info.value
    assert err.path == str(existing)
    assert str(err).startswith(f"{existing}: output exists.")
    assert "--overwrite" in str(err)
    assert isinstance(err, FileExistsError)
    assert existing.read_bytes() == b"precious" and existing.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_polygons.gpkg"]


def test_plan_names_the_first_existing_output(tmp_path):
    (tmp_path / "s.stac.json").write_text("{}")
    (tmp_path / "s_classes.tif.aux.xml").write_text("<PAMDataset/>")
    with pytest.raises(OutputExistsError, match="s_classes.tif.aux.xml"):
        plan_outputs(tmp_path, "s", probabilities=False, overwrite=False)


def test_plan_ignores_probabilities_it_will_not_write(tmp_path):
    (tmp_path / "s_probs.tif").write_bytes(b"old")
    assert plan_outputs(tmp_path, "s", probabilities=False, overwrite=False).probs is None


def test_plan_with_overwrite_accepts_existing_outputs(tmp_path):
    (tmp_path / "s_classes.tif").write_bytes(b"old")
    plan = plan_outputs(tmp_path, "s", probabilities=True, overwrite=True)
    assert plan.classes.read_bytes() == b"old"  # planning modifies nothing


def test_plan_refuses_an_unwritable_directory(tmp_path):
    out = _unwritable_dir(tmp_path)
    with pytest.raises(OutputError) as info:
        plan_outputs(out, "s", probabilities=False, overwrite=False)
    assert "choose a writable directory" in str(info.value)
    assert isinstance(info.value, OSError)


def test_plan_refuses_a_directory_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create the output directory"):
        plan_outputs(blocker / "sub", "s", probabilities=False, overwrite=False)
    with pytest.raises(OutputError, match="not a directory|cannot create"):
        plan_outputs(blocker, "s", probabilities=False, overwrite=False)


@pytest.mark.parametrize("stem", ["", "a/b", ".hidden"])
def test_plan_refuses_a_bad_stem(tmp_path, stem):
    with pytest.raises(OutputError):
        plan_outputs(tmp_path, stem, probabilities=False, overwrite=False)


def test_temporary_names_keep_the_suffix_and_are_unique(tmp_path):
    unique = rf"{os.getpid()}-[0-9a-f]{{8}}"
    assert re.fullmatch(rf"\.x_classes\.{unique}\.tmp\.tif", temporary_path(tmp_path / "x_classes.tif").name)
    assert re.fullmatch(rf"\.x_classes\.stage\.{unique}\.tmp\.tif",
                        temporary_path(tmp_path / "x_classes.tif", tag="stage").name)
    assert re.fullmatch(rf"\.x\.stac\.{unique}\.tmp\.json", temporary_path(tmp_path / "x.stac.json").name)
    assert temporary_path(tmp_path / "x_polygons.gpkg").parent == tmp_path
    # two writers of one output (threads, processes, batches) never share a temporary
    assert len({temporary_path(tmp_path / "x_classes.tif") for _ in range(100)}) == 100
    assert temporaries(tmp_path, "x") == []
    made = temporary_path(tmp_path / "x_classes.tif")
    made.write_text("left by a killed writer")
    assert temporaries(tmp_path, "x") == [made]


def test_dead_writers_temporaries_are_removed_live_ones_kept(tmp_path):
    final = tmp_path / "report.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = tmp_path / f".report.{proc.pid}-0123abcd.tmp.jsonl"
    live = temporary_path(final)
    for path in (dead, live, tmp_path / ".report.tmp.jsonl", tmp_path / ".other.1-0123abcd.tmp.jsonl"):
        path.write_text("x")
    assert remove_dead_temporaries(final) == [dead]
    assert not dead.exists() and live.exists()


def test_a_reused_pid_does_not_keep_a_dead_writers_temporary(tmp_path):
    """The pid in a temporary's name now runs, but that process started after the file was last written."""
    final = tmp_path / "report.jsonl"
    reused = temporary_path(final)  # this process's pid
    reused.write_text("left by an earlier process with the same pid")
    before = psutil.Process().create_time() - 60
    os.utime(reused, (before, before))
    assert remove_dead_temporaries(final) == [reused]
    assert pid_runs(os.getpid()) and not pid_runs(os.getpid(), before) and pid_runs(os.getpid(), time.time())


def test_write_journal_removes_only_what_this_writer_left_in_place(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with write_journal() as journal:
        for path in (a, b):
            with atomic_write(path) as tmp:
                tmp.write_text("mine")
    with atomic_write(b) as tmp:  # outside the journal: another writer replaces b
        tmp.write_text("theirs")
    assert [w.path for w in journal] == [a, b]
    assert remove_written(journal) == [a]
    assert not a.exists() and b.read_text() == "theirs"


def test_a_journal_inside_another_notes_into_both(tmp_path):
    """A scene's attempt (inner journal) inside a batch task (outer): the task can still undo the scene."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with write_journal() as outer:
        with write_journal() as inner, atomic_write(a) as tmp:
            tmp.write_text("scene")
        with atomic_write(b) as tmp:
            tmp.write_text("record")
    assert [w.path for w in inner] == [a] and [w.path for w in outer] == [a, b]


def test_atomic_write_renames_on_success(tmp_path):
    final = tmp_path / "x.txt"
    with atomic_write(final) as tmp:
        assert tmp.name.startswith(".x.") and tmp.name.endswith(".tmp.txt") and tmp.parent == tmp_path
        tmp.write_text("new")
        assert not final.exists()
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_write_removes_the_temporary_on_error_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "x.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(final) as tmp:
        tmp.write_text("half")
        Path(str(tmp) + "-journal").write_text("sidecar")
        raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_write_replaces_an_existing_file(tmp_path):
    final = tmp_path / "x.txt"
    final.write_text("old")
    with atomic_write(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"


def test_atomic_write_without_output_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="produced no file"), atomic_write(tmp_path / "x.txt"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_cleanup_removes_only_this_stems_temporaries(tmp_path):
    leftovers = [".s_classes.tmp.tif", ".s_classes.stage.tmp.tif", ".s_classes.tmp.tif.aux.xml",
                 ".s_polygons.tmp.gpkg-journal", ".s.stac.tmp.json", ".s_classes.tif.aux.tmp.xml"]
    keep = ["s_classes.tif", ".s_b_classes.tmp.tif", ".other_classes.tmp.tif", "notes.tmp.txt"]
    for name in leftovers + keep:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in temporaries(tmp_path, "s")) == sorted(leftovers)
    removed = cleanup_temporaries(tmp_path, "s")
    assert sorted(p.name for p in removed) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert cleanup_temporaries(tmp_path / "missing", "s") == []


def test_error_names_file_problem_and_fix(tmp_path):
    (tmp_path / "s_classes.qml").write_text("x")
    with pytest.raises(OutputExistsError) as info:
        plan_outputs(tmp_path, "s", probabilities=False, overwrite=False)
    text = str(info.value)
    assert text == f"{tmp_path / 's_classes.qml'}: output exists. pass --overwrite or choose another --out."
    assert os.fspath(info.value.path).endswith("s_classes.qml")
