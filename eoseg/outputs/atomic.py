"""Output planning and atomic writes.

Every output is written under a temporary name in its final directory and renamed over the final
name (``os.replace``) only once complete, so a crash or an error never leaves a half-written file
under a final name. Temporary names start with ``.``, are unique to the process and the call (pid and a
random token, so two writers of the same output never share one) and keep the final suffix (GDAL picks
drivers by extension): ``x_classes.tif`` is written as ``.x_classes.<pid>-<token>.tmp.tif``. Helpers that need
a second temporary next to the same output (a staging GeoTIFF) add a tag: ``.x_classes.stage.<pid>-<token>.tmp.tif``.
Each temporary is fsynced before its rename and the directory after it, so a renamed file survives a crash.

Inside :func:`write_journal`, every rename into place is noted with the file's identity (inode, size,
mtime), so a failed attempt can remove exactly what it wrote and nothing that another writer replaced since
(:func:`remove_written`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import psutil

from eoseg.errors import OutputError, OutputExistsError

TMP_MARK = "tmp"
AUX_SUFFIX = ".aux.xml"
WRITABLE_FIX = "choose a writable directory with --out"
EXISTS_FIX = "pass --overwrite or choose another --out"
PID_START_SLACK_S = 2.0  # process start times are derived from the boot time and clock ticks: allow for rounding


@dataclass(frozen=True)
class OutputPaths:
    """Where one scene's outputs go. ``probs`` / ``shoreline`` are None when those are not written."""

    out_dir: Path
    stem: str
    classes: Path
    qml: Path
    probs: Path | None
    polygons: Path
    stac: Path
    shoreline: Path | None = None

    @property
    def classes_aux(self) -> Path:
        """The GDAL PAM sidecar of the class raster (category names)."""
        return aux_path(self.classes)

    def files(self) -> list[Path]:
        """Every file this plan writes, in the order they are checked."""
        paths = [self.classes, self.classes_aux, self.qml, self.probs, self.polygons, self.shoreline, self.stac]
        return [p for p in paths if p is not None]

    def assets(self) -> dict[str, Path]:
        """STAC asset key → file, for :func:`eoseg.outputs.stac.write_stac_item`."""
        assets = {"classes": self.classes, "classes_metadata": self.classes_aux, "classes_style": self.qml}
        if self.probs is not None:
            assets["probabilities"] = self.probs
        assets["polygons"] = self.polygons
        if self.shoreline is not None:
            assets["shoreline"] = self.shoreline
        return assets


def aux_path(path: Path) -> Path:
    """``x.tif`` → ``x.tif.aux.xml`` (GDAL's PAM sidecar)."""
    return path.with_name(path.name + AUX_SUFFIX)


def unique_token() -> str:
    """``<pid>-<8 hex digits>``: unique to this process and call."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def temporary_path(final: Path, tag: str = "") -> Path:
    """A new temporary name for ``final``: ``.<stem>.[<tag>.]<pid>-<token>.tmp<suffix>`` in the same directory."""
    final = Path(final)
    middle = ".".join(part for part in (tag, unique_token(), TMP_MARK) if part)
    return final.with_name(f".{final.stem}.{middle}{final.suffix}")


def output_files(out_dir: Path, stem: str, *, probabilities: bool = True, shoreline: bool = False) -> OutputPaths:
    """The output names for ``stem`` in ``out_dir``, without touching the file system."""
    out_dir = Path(out_dir)
    return OutputPaths(
        out_dir=out_dir,
        stem=stem,
        classes=out_dir / f"{stem}_classes.tif",
        qml=out_dir / f"{stem}_classes.qml",
        probs=out_dir / f"{stem}_probs.tif" if probabilities else None,
        polygons=out_dir / f"{stem}_polygons.gpkg",
        stac=out_dir / f"{stem}.stac.json",
        shoreline=out_dir / f"{stem}_shoreline.gpkg" if shoreline else None,
    )


def _check_stem(stem: str) -> None:
    if not stem or stem.startswith(".") or "/" in stem or os.sep in stem:
        raise OutputError(
            f"output stem {stem!r} is not a plain file name", path=stem or "<empty stem>",
            fix="use a name without directory separators or a leading dot",
        )


def _make_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory ({exc.strerror or exc})", path=out_dir,
                          fix=WRITABLE_FIX) from exc
    if not out_dir.is_dir():
        raise OutputError("the output path is not a directory", path=out_dir, fix=WRITABLE_FIX)


def _check_writable(out_dir: Path, stem: str) -> None:
    """``os.access`` and a real probe file (access() says yes for root even where writes fail)."""
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError("the output directory is not writable", path=out_dir, fix=WRITABLE_FIX)
    probe = temporary_path(out_dir / f"{stem}_classes.tif", tag="probe")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"eoseg")
    except OSError as exc:
        raise OutputError(f"cannot write in the output directory ({exc.strerror or exc})", path=out_dir,
                          fix=WRITABLE_FIX) from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _check_existing(plan: OutputPaths) -> None:
    for path in plan.files():
        if path.exists() or path.is_symlink():
            raise OutputExistsError("output exists", path=path, fix=EXISTS_FIX)


def plan_outputs(out_dir: Path, stem: str, *, probabilities: bool, overwrite: bool,
                 shoreline: bool = False) -> OutputPaths:
    """Decide and check the output paths before any work is done.

    Creates ``out_dir`` if needed. Raises :class:`OutputError` if it cannot be created or written
    to, and :class:`OutputExistsError` naming the first existing output unless ``overwrite``.
    Nothing that exists is modified.
    """
    _check_stem(stem)
    out_dir = Path(out_dir)
    _make_dir(out_dir)
    plan = output_files(out_dir, stem, probabilities=probabilities, shoreline=shoreline)
    if not overwrite:
        _check_existing(plan)
    _check_writable(out_dir, stem)
    return plan


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()


def remove_with_sidecars(path: Path) -> None:
    """Remove ``path`` and files GDAL/SQLite may have made next to it (``-journal``, ``.aux.xml``, ``.ovr``)."""
    path = Path(path)
    remove_quietly(path)
    if path.parent.is_dir():
        for other in path.parent.glob(f"{_glob_escape(path.name)}*"):
            if other.is_file() or other.is_symlink():
                remove_quietly(other)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@dataclass(frozen=True)
class Written:
    """A file renamed into place by this process, as it was right after the rename."""

    path: Path
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Written:
        stat = Path(path).stat()
        return cls(Path(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def unchanged(self) -> bool:
        """Still the file this process wrote (not replaced by another writer since)?"""
        try:
            return Written.of(self.path) == self
        except OSError:
            return False


_JOURNALS: ContextVar[tuple[list[Written], ...]] = ContextVar("eoseg_write_journals", default=())


@contextlib.contextmanager
def write_journal() -> Iterator[list[Written]]:
    """Note every :func:`publish` in this thread / context into the yielded list (and into every enclosing
    journal: a scene's attempt inside a batch task is noted in both)."""
    journal: list[Written] = []
    token = _JOURNALS.set((*_JOURNALS.get(), journal))
    try:
        yield journal
    finally:
        _JOURNALS.reset(token)


def remove_written(journal: list[Written]) -> list[Path]:
    """Remove the journal's files that are still as written (with GDAL sidecars); returns what was removed."""
    removed = []
    for entry in reversed(journal):
        if entry.unchanged():
            remove_quietly(entry.path)
            removed.append(entry.path)
    return removed


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's) data to disk; file systems that refuse it for directories are let be."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0)
    fd = os.open(path, flags)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it over ``final``, fsync the directory, note it in the write journal."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(Path(final).parent)
    journals = _JOURNALS.get()
    if journals:
        written = Written.of(Path(final))
        for journal in journals:
            journal.append(written)


@contextlib.contextmanager
def atomic_write(final: Path) -> Iterator[Path]:
    """Yield a new temporary path next to ``final``; publish it over ``final`` on success, remove it on error."""
    final = Path(final)
    tmp = temporary_path(final)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError("the writer produced no file", path=final,
                              fix="report this as a bug in eoseg")
        publish(tmp, final)
    except BaseException:
        remove_with_sidecars(tmp)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """``data`` as indented, key-sorted JSON (UTF-8), written atomically."""
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def pid_runs(pid: object, wrote_at: float | None = None) -> bool:
    """Does process ``pid`` of this host still run? Given ``wrote_at`` (the modification time of a file that
    process wrote), a process now holding that pid but started after it is a reuse of the number, not the
    writer: the writer is gone."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return wrote_at is None or not _started_after(pid, wrote_at)


def _started_after(pid: int, moment: float) -> bool:
    """Did process ``pid`` start after ``moment`` (beyond the precision of process start times)?"""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. access denied: cannot tell, so the process is taken as the writer
        return False
    return started > moment + PID_START_SLACK_S


def remove_dead_temporaries(final: Path) -> list[Path]:
    """Remove the temporaries of ``final`` left by processes of this host that no longer run."""
    final = Path(final)
    removed = []
    for path in final.parent.glob(f".{_glob_escape(final.stem)}.*-*.{TMP_MARK}{_glob_escape(final.suffix)}"):
        pid = path.name[len(final.stem) + 2:].split(".")[-3].split("-")[0]
        if pid.isdigit() and not pid_runs(int(pid), modified_at(path)):
            remove_quietly(path)
            removed.append(path)
    return removed


def modified_at(path: Path) -> float | None:
    """``path``'s modification time; None when it cannot be read (e.g. removed meanwhile)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def temporaries(out_dir: Path, stem: str) -> list[Path]:
    """Leftover temporaries of ``stem``'s outputs in ``out_dir`` (from a killed run)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found: set[Path] = set()
    for final in output_files(out_dir, stem).files():
        for path in out_dir.glob(f".{_glob_escape(final.stem)}.*"):
            if f".{TMP_MARK}" in path.name[len(final.stem) + 1:] and (path.is_file() or path.is_symlink()):
                found.add(path)
    return sorted(found)


def cleanup_temporaries(out_dir: Path, stem: str) -> list[Path]:
    """Remove leftover temporaries of ``stem``'s outputs; returns what was removed."""
    removed = temporaries(out_dir, stem)
    for path in removed:
        remove_quietly(path)
    return removed


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def all_or_nothing(paths: list[Path]) -> Iterator[None]:
    """On an exception in the block, leave ``paths`` (one scene's outputs) as a whole set or none.

    One scene's outputs are written one after another (class COG, its sidecar, style, probabilities,
    polygons, STAC item). If the block fails before it renamed any of them into place, nothing is touched:
    outputs of an earlier run (``--overwrite``) stay as they were. Once it has, it removes what it renamed into
    place (while still as it wrote it) and what is left of an earlier run's set (files as they were before the
    block: no longer a whole, e.g. its STAC item would name the removed class COG), so the scene has no outputs
    rather than some and a rerun needs no ``--overwrite``. A file another writer put there meanwhile (a batch
    attempt that took the scene over) is never removed. Each writer removes its own temporaries. The
    exception itself propagates unchanged.
    """
    before = {Path(p): _identity(Path(p)) for p in paths}
    with write_journal() as journal:
        try:
            yield
        except BaseException:
            if journal:
                mine = [entry.path for entry in journal if entry.unchanged()]
                earlier = [path for path, identity in before.items()
                           if identity is not None and _identity(path) == identity]
                for path in dict.fromkeys([*mine, *earlier]):
                    try:
                        remove_quietly(path)
                    except OSError as exc:  # best effort while unwinding; the original error is the one to report
                        logging.getLogger(__name__).warning("could not remove partial output %s: %s", path, exc)
            raise
