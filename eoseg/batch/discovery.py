"""Which scenes a batch processes: files, directories (recursive), globs and manifests, each with its output place."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from eoseg.batch.jobs import SceneJob
from eoseg.errors import ConfigError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
MANIFEST_SUFFIXES = (".txt", ".csv", ".lst", ".list")
MANIFEST_COLUMNS = ("path", "scene", "file", "filename", "image")


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_inside(path: Path, directory: Path | None) -> bool:
    return directory is not None and (path == directory or directory in path.parents)


def _absolute(path: str | os.PathLike) -> Path:
    """Absolute and normalised, symlinks kept (so paths stay under the input root they were found in)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _scan_directory(root: Path, exclude: Path | None) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if (path.suffix.lower() in GEOTIFF_SUFFIXES and path.is_file() and not _is_hidden(path, root)
                and not _is_inside(path, exclude)):
            found.append(path)
    return sorted(found)


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return _absolute(Path(*parts)) if parts else _absolute(".")


def _expand_glob(pattern: str, exclude: Path | None) -> tuple[Path, list[Path]]:
    pattern = os.path.expanduser(pattern)
    matches = sorted({_absolute(p) for p in glob.glob(pattern, recursive=True)})
    return _glob_root(pattern), [p for p in matches if p.is_file() and not _is_inside(p, exclude)]


def _manifest_column(header: list[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in MANIFEST_COLUMNS:
        if name in lowered:
            return lowered.index(name)
    return None


def _manifest_entries(manifest: Path) -> list[str]:
    """Paths listed in a text manifest (one a line, ``#`` comments) or a CSV (a ``path`` column, else the first)."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the manifest ({exc})", path=manifest,
                          fix="give a text file with one scene path a line, or a CSV with a 'path' column") from None
    if manifest.suffix.lower() != ".csv":
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    column = _manifest_column(rows[0]) if rows else None
    if column is not None:
        rows = rows[1:]
    return [r[column or 0].strip() for r in rows if len(r) > (column or 0) and r[column or 0].strip()]


def _expand_manifest(manifest: Path, exclude: Path | None) -> tuple[Path, list[Path]]:
    files: list[Path] = []
    for entry in _manifest_entries(manifest):
        target = Path(os.path.expanduser(entry))
        target = _absolute(target if target.is_absolute() else manifest.parent / target)
        if glob.has_magic(str(target)):
            files += _expand_glob(str(target), exclude)[1]
        elif target.is_dir():
            files += _scan_directory(target, exclude)
        elif target.is_file():
            files.append(target)
        else:
            raise ConfigError("a manifest entry does not exist", path=f"{manifest}: {entry}",
                              fix="fix or remove the line (relative paths are read from the manifest's folder)")
    root = Path(os.path.commonpath([f.parent for f in files])) if files else manifest.parent
    return root, files


def _expand_input(item: str | os.PathLike, exclude: Path | None) -> tuple[Path, list[Path]]:
    """``(root, scene files)`` for one input."""
    text = os.fspath(item)
    path = _absolute(text)
    if path.is_dir():
        return path, _scan_directory(path, exclude)
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return _expand_manifest(path, exclude)
        return path.parent, [path]
    if glob.has_magic(text):
        return _expand_glob(text, exclude)
    raise ConfigError("input does not exist", path=text,
                      fix="give scene files, directories, glob patterns (quoted) or a .txt/.csv manifest")


def _relative(file: Path, root: Path) -> PurePosixPath:
    try:
        return PurePosixPath(file.relative_to(root).as_posix())
    except ValueError:  # a pattern that climbs out of its own prefix ("a/*/../../b.tif")
        return PurePosixPath(file.name)


def discover_scenes(inputs: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None) -> list[SceneJob]:
    """The scenes named by ``inputs`` (files, directories, globs, manifests), each with its output location.

    Files under ``exclude`` (the output directory) and hidden files are left out; a scene named twice is kept
    once. Raises :class:`ConfigError` if nothing is found or two scenes would write the same outputs.
    """
    exclude_dir = _absolute(exclude) if exclude is not None else None
    jobs: dict[Path, SceneJob] = {}
    owners: dict[str, Path] = {}
    inputs = list(inputs)
    for item in inputs:
        root, files = _expand_input(item, exclude_dir)
        for file in files:
            if file in jobs:
                continue
            job = SceneJob(file, _relative(file, root))
            if job.output_key in owners:
                raise ConfigError(
                    f"two scenes would write the same outputs ({owners[job.output_key]} and {file})",
                    path=job.output_key,
                    fix="pass their common parent directory (or a manifest) so the output tree keeps them apart")
            owners[job.output_key] = file
            jobs[file] = job
    if not jobs:
        shown = ", ".join(os.fspath(i) for i in inputs) or "<no inputs>"
        raise ConfigError("no scenes found", path=shown,
                          fix="give GeoTIFFs (.tif/.tiff), folders holding them, glob patterns or a manifest")
    return list(jobs.values())
