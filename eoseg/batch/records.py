"""Completion records: what identifies a finished scene (input, model, settings, outputs) for ``--resume``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eoseg import __version__
from eoseg.batch.jobs import SceneJob, TaskSpec, now
from eoseg.checksums import file_sha256
from eoseg.errors import SceneReadError
from eoseg.predict import PredictSettings


def input_identity(path: Path, checksum: bool = False) -> dict:
    """What identifies an input file for resume: size and mtime_ns, plus sha256 if ``checksum``."""
    path = Path(str(path).split("#", 1)[0])  # an item of an ItemCollection: the collection file
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise SceneReadError(f"cannot read the scene ({exc.strerror or exc})", path=path,
                             fix="check that the file exists and is readable from every worker") from None
    if path.is_dir():  # a product folder: its files together
        files = sorted(p for p in path.rglob("*") if p.is_file())
        stats = [p.stat() for p in files]
        identity: dict[str, Any] = {"size": sum(st.st_size for st in stats),
                                    "mtime_ns": max((st.st_mtime_ns for st in stats), default=stat.st_mtime_ns),
                                    "files": len(files)}
        if checksum:
            identity["sha256"] = file_sha256(*files)
        return identity
    identity = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if checksum:
        identity["sha256"] = file_sha256(path)
    return identity


def settings_key(settings: PredictSettings) -> dict:
    """The prediction settings that a completion record must match (``overwrite`` changes no output, and
    ``compile`` only how fast the same model runs)."""
    return {k: v for k, v in settings.to_dict().items() if k not in ("overwrite", "compile")}


def _describe_outputs(outputs: dict[str, Path], base: Path) -> dict[str, dict]:
    return {key: {"path": os.path.relpath(p, base), "size": Path(p).stat().st_size, "sha256": file_sha256(p)}
            for key, p in outputs.items()}


def build_record(job: SceneJob, spec: TaskSpec, outputs: dict[str, Path], identity: dict, extra: dict) -> dict:
    base = job.out_dir(spec.out_root)
    return {
        "eoseg_version": __version__,
        "batch": spec.batch_id,
        "input": {"path": str(job.path), **identity},
        "model": {"refs": list(spec.models), "sha256": spec.model_hash},
        "settings": settings_key(spec.settings),
        "outputs": _describe_outputs(outputs, base),
        "finished": now(),
        **extra,
    }


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _output_matches(entry: dict, base: Path) -> bool:
    path = base / entry.get("path", "")
    try:
        return path.stat().st_size == entry.get("size") and file_sha256(path) == entry.get("sha256")
    except OSError:
        return False


def record_mismatch(record: dict | None, job: SceneJob, spec: TaskSpec) -> str | None:
    """Why a completion record no longer describes the scene's outputs, or None when it still does."""
    if record is None:
        return "no completion record"
    identity = input_identity(job.path, checksum=spec.checksum_inputs)
    stored = record.get("input", {})
    checks = (
        (record.get("eoseg_version") == __version__, "eoseg version changed"),
        (all(stored.get(k) == v for k, v in identity.items()), "input changed"),
        (record.get("model", {}).get("sha256") == spec.model_hash, "model changed"),
        (record.get("settings") == json.loads(json.dumps(settings_key(spec.settings))), "settings changed"),
    )
    for ok, reason in checks:
        if not ok:
            return reason
    outputs = record.get("outputs") or {}
    base = job.out_dir(spec.out_root)
    if not outputs or not all(_output_matches(e, base) for e in outputs.values()):
        return "outputs missing or changed"
    return None
