"""Helpers for the eoseg.batch tests: archives made of 128 × 128 crops of the real test scenes (one 128-px tile
each with the random bundle), copied under several names; corrupt files; task specs; report readers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.windows import Window

from eoseg.batch import (
    TaskSpec,
    read_json,
)
from eoseg.bundle import bundle_sha256
from eoseg.checksums import file_sha256
from eoseg.outputs.cog import validate_cog
from eoseg.predict import PredictSettings

OFFSETS = [(0, 0), (128, 0), (0, 128), (128, 128), (192, 64), (64, 64), (96, 0), (160, 128)]


FP32 = PredictSettings(precision="fp32")


EOSEG = [str(Path(sys.executable).with_name("eoseg"))]


def crop(src: Path, dst: Path, col: int = 0, row: int = 0, size: int = 128) -> Path:
    """A size × size crop of a real scene, keeping CRS, band descriptions, nodata and tags."""
    with rasterio.open(src) as ds:
        window = Window(col, row, min(size, ds.width - col), min(size, ds.height - row))
        profile = ds.profile | {"width": int(window.width), "height": int(window.height),
                                "transform": ds.transform @ Affine.translation(col, row), "driver": "GTiff"}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=window))
            out.descriptions = ds.descriptions
            out.update_tags(**ds.tags())
    return dst


def make_archive(root: Path, scene: Path, n: int, prefix: str = "S2A_201601") -> list[Path]:
    """``n`` crops named like a dated archive (S2A_20160110_0.tif, ...), some in sub-folders."""
    paths = []
    for i in range(n):
        sub = root / ("2016" if i % 2 else "") / f"{prefix}{10 + i:02d}_{i}.tif"
        paths.append(crop(scene, sub, *OFFSETS[i % len(OFFSETS)]))
    return paths


def poison(path: Path, source: Path) -> Path:
    """A corrupt GeoTIFF: the first 20 kB of a real one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes()[:20000])
    return path


def spec_for(bundle: Path, out: Path, **kw) -> TaskSpec:
    values = dict(models=(str(bundle),), settings=FP32, out_root=out, batch_id="test-batch",
                  class_ids={"water": 0, "whitewater": 1, "sand": 2, "other": 3}, nodata=255)
    values = values | kw
    if "model_hash" not in values:
        values["model_hash"] = bundle_sha256(bundle)
    return TaskSpec(**values)


def checksums(paths) -> dict[Path, tuple[str, int]]:
    return {p: (file_sha256(p), p.stat().st_mtime_ns) for p in paths}


def report_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]


def assert_valid_outputs(out: Path, outcome: dict) -> None:
    assert outcome["status"] == "ok", outcome
    classes = out / outcome["outputs"]["classes"]
    valid, errors, _ = validate_cog(classes)
    assert valid, errors
    record = read_json(out / outcome["record"])
    assert set(record["outputs"]) >= {"classes", "polygons", "stac", "style"}


def dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(out: Path) -> list[Path]:
    """Temporaries and claims: nothing hidden may survive a finished batch."""
    return [p for p in out.rglob(".*") if p.is_file()]
