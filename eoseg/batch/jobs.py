"""A batch's units of work: one scene (:class:`SceneJob`) and what every task needs (:class:`TaskSpec`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from eoseg.errors import OutputError
from eoseg.predict import PredictSettings

RECORD_SUFFIX = ".done.json"
CLAIM_SUFFIX = ".claim.json"


@dataclass(frozen=True)
class SceneJob:
    """One scene of the archive: its absolute path and where its outputs go, relative to the output root."""

    path: Path
    relpath: PurePosixPath

    @property
    def stem(self) -> str:
        name = self.relpath.name
        return name.rsplit(".", 1)[0] if "." in name else name

    def out_dir(self, root: Path) -> Path:
        return Path(root) / self.relpath.parent

    def record_path(self, root: Path) -> Path:
        return self.out_dir(root) / f"{self.stem}{RECORD_SUFFIX}"

    def claim_path(self, root: Path) -> Path:
        return self.out_dir(root) / f".{self.stem}{CLAIM_SUFFIX}"

    @property
    def output_key(self) -> str:
        return str(self.relpath.parent / self.stem)


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs for any scene of one batch (small and picklable: no model objects)."""

    models: tuple[str, ...]
    settings: PredictSettings
    out_root: Path
    model_hash: str
    batch_id: str
    class_ids: dict[str, int]
    nodata: int
    resume: bool = False
    checksum_inputs: bool = False
    summary: bool = False
    torch_threads: int | None = None
    host_threads: dict[str, int] = field(default_factory=dict)
    max_cloud: float | None = None  # skip product scenes whose quality layer says more cloud than this (0-1)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def make_out_root(out_root: Path) -> None:
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory ({exc.strerror or exc})", path=out_root,
                          fix="choose a writable directory with --out") from None
