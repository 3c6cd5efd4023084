"""Which scenes a batch processes: files, directories (recursive), globs and manifests, each with its output place.

Archive products are one scene each (:mod:`eoseg.products`): a Landsat or Sentinel-2 product folder, or the band
files of one product among others in a flat folder, is one job named by its product id, never one job per band
file. STAC Items, ItemCollections (each item: ``FILE.json#ITEM_ID``) and catalogs / collections (their item and
child links, followed) are accepted as inputs.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from eoseg.batch.jobs import SceneJob
from eoseg.errors import ConfigError, EosegError
from eoseg.products.base import LANDSAT_BAND, LANDSAT_ID, LANDSAT_QA, S2_FILE, S2_MTD

GEOTIFF_SUFFIXES = (".tif", ".tiff")
MANIFEST_SUFFIXES = (".txt", ".csv", ".lst", ".list")
MANIFEST_COLUMNS = ("path", "scene", "file", "filename", "image")
_MTL = re.compile(r"_MTL\.(txt|json)$", re.I)
_MULTI_BAND = re.compile(r"_(B\d+){2,}", re.I)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_inside(path: Path, directory: Path | None) -> bool:
    return directory is not None and (path == directory or directory in path.parents)


def _absolute(path: str | os.PathLike) -> Path:
    """Absolute and normalised, symlinks kept (so paths stay under the input root they were found in)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _scan_directory(root: Path, exclude: Path | None) -> list[Path]:
    """Scenes under ``root``: GeoTIFFs, product folders, and one member of each product in a flat folder."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _is_inside(folder / d, exclude))
        if _is_inside(folder, exclude) or (folder != root and _is_hidden(folder, root)):
            continue
        products, plain = product_entries(folder, sorted(f for f in filenames if not f.startswith(".")))
        if products == [folder] and not plain and (folder.name.upper().endswith(".SAFE") or not dirnames
                                                   or _has_s2_metadata(filenames)):
            dirnames[:] = []  # a product folder (a .SAFE holds its bands in sub-folders)
        found += products + [folder / f for f in plain if f.lower().endswith(GEOTIFF_SUFFIXES)]
    return sorted(set(found))


def _has_s2_metadata(filenames: list[str]) -> bool:
    return any(S2_MTD.match(f) for f in filenames)


def product_entries(folder: Path, filenames: list[str]) -> tuple[list[Path], list[str]]:
    """``(products, other files)`` of one folder: the folder itself when it holds one product (its other files,
    e.g. Landsat angle bands or Sentinel-2 TCI / AOT, are part of it), else one member (its MTL, or its first
    band file) per product among its files, and the files of no product."""
    if folder.name.upper().endswith(".SAFE") or _has_s2_metadata(filenames):
        return [folder], []
    groups: dict[tuple[str, str], list[str]] = {}
    plain = []
    for name in filenames:
        landsat = LANDSAT_ID.match(name)
        s2 = S2_FILE.match(name)
        if landsat:  # every file named by a Landsat product id is part of that product
            groups.setdefault(("landsat", landsat.group(1).upper()), []).append(name)
        elif s2 and not _MULTI_BAND.search(name) and not name.upper().startswith("MSK_"):
            groups.setdefault(("sentinel2", s2.group("key").upper()), []).append(name)
        else:
            plain.append(name)
    if len(groups) == 1:
        return [folder], []
    members = [folder / next((n for n in names if _MTL.search(n)),
                             next((n for n in names if _is_band_name(n)), names[0])) for names in groups.values()]
    return members, plain


def _is_band_name(name: str) -> bool:
    return bool(LANDSAT_BAND.search(name) or S2_FILE.match(name))


def _json_entries(path: Path, seen: set[Path] | None = None) -> list[Path]:
    """The items a STAC JSON names: itself (an Item), ``FILE.json#ID`` per item of an ItemCollection, or the
    items reached through a catalog's / collection's ``item`` and ``child`` links."""
    from eoseg.products import read_json

    seen = seen if seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    data = read_json(path)
    kind = data.get("type")
    if kind == "Feature":
        return [path]
    if kind == "FeatureCollection":
        return [Path(f"{path}#{f.get('id')}") for f in data.get("features") or []]
    if kind in ("Catalog", "Collection"):
        entries = []
        for link in data.get("links") or []:
            if link.get("rel") in ("item", "child") and link.get("href"):
                entries += _json_entries(_absolute(path.parent / link["href"]), seen)
        return entries
    raise ConfigError(f"is not a STAC Item, ItemCollection, Catalog or Collection (type {kind!r})", path=path,
                      fix="give STAC JSON, GeoTIFFs, product folders or a .txt/.csv manifest")


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
        elif target.is_file() and target.suffix.lower() == ".json":
            files += _json_entries(target)
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
        if path.suffix.lower() in MANIFEST_SUFFIXES and not _MTL.search(path.name):
            return _expand_manifest(path, exclude)
        if path.suffix.lower() == ".json" and not _MTL.search(path.name):
            return path.parent, _json_entries(path)
        return path.parent, [path]
    if glob.has_magic(text):
        return _expand_glob(text, exclude)
    raise ConfigError("input does not exist", path=text,
                      fix="give scene files, directories, glob patterns (quoted) or a .txt/.csv manifest")


def _relative(file: Path, root: Path) -> PurePosixPath:
    if "#" in file.name or file.suffix.lower() == ".json" or _is_product_member(file):
        return _product_relpath(file, root)
    try:
        return PurePosixPath(file.relative_to(root).as_posix())
    except ValueError:  # a pattern that climbs out of its own prefix ("a/*/../../b.tif")
        return PurePosixPath(file.name)


def _is_product_member(path: Path) -> bool:
    name = path.name
    return path.is_dir() or bool(_MTL.search(name) or S2_MTD.match(name)) or bool(
        LANDSAT_ID.match(name) and (LANDSAT_BAND.search(name) or LANDSAT_QA.search(name))) or bool(
        S2_FILE.match(name) and not _MULTI_BAND.search(name))


def _product_relpath(path: Path, root: Path) -> PurePosixPath:
    """``<folder relative to root>/<product id>``: outputs are named by the product id."""
    from eoseg.products import find_product

    try:
        product = find_product(path)
    except EosegError:
        product = None  # a broken product: the job fails with the same error, named by its folder
    container = path if path.is_dir() else Path(str(path).split("#", 1)[0]).parent
    name = product.product_id if product is not None else (path.name if path.is_dir() else path.stem)
    try:
        parent = PurePosixPath(container.relative_to(root).as_posix())
    except ValueError:
        parent = PurePosixPath(".")
    if path.is_dir() and parent != PurePosixPath("."):
        parent = parent.parent
    return parent / name


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
                          fix="give GeoTIFFs (.tif/.tiff), product folders, STAC JSON, folders holding them, glob "
                              "patterns or a manifest")
    return list(jobs.values())
