"""One error hierarchy for eoseg.

Every error carries the file it concerns, what is wrong and how to fix it, and renders as
``<file>: <problem>. <fix>`` so the CLI can print it on one line. Subclasses also subclass the
matching builtin (as rasterio does) so callers can catch ``OSError`` or ``ValueError`` as usual.
"""

from __future__ import annotations

from os import PathLike


class EosegError(Exception):
    """Base class: ``EosegError(problem, path=..., fix=...)``."""

    exit_code = 1

    def __init__(self, problem: str, *, path: str | PathLike | None = None, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.problem}." if self.path else f"{self.problem}."
        if self.fix:
            text += f" {self.fix.rstrip('.')}."
        return text


class SceneReadError(EosegError, OSError):
    """A scene cannot be opened or read (missing, truncated, not a raster)."""


class GeoreferenceError(EosegError, ValueError):
    """A scene lacks a CRS or geotransform."""


class BandMappingError(EosegError, ValueError):
    """The scene's bands cannot be mapped to the roles a model needs."""


class EmptySceneError(EosegError, ValueError):
    """A scene (or dataset) holds no valid pixels."""


class TileSizeError(EosegError, ValueError):
    """Tile size or overlap is unusable (not a multiple of 32, overlap too large)."""

    exit_code = 2


class ModelNotFoundError(EosegError, KeyError):
    """An unknown model or bundle name."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return EosegError.__str__(self)


class PredictionError(EosegError, ValueError):
    """A model's output cannot be used (non-finite logits even in fp32)."""


class BundleError(EosegError, ValueError):
    """A model bundle is missing files or is inconsistent."""


class OutputExistsError(EosegError, FileExistsError):
    """An output exists and ``overwrite`` was not given."""


class OutputError(EosegError, OSError):
    """An output cannot be written (directory missing or read-only, disk full)."""


class ConfigError(EosegError, ValueError):
    """A configuration file or value is invalid."""

    exit_code = 2


class DatasetError(EosegError, ValueError):
    """Training / evaluation data is missing or inconsistent."""


class ScalingError(EosegError, ValueError):
    """A scene's values cannot be turned into reflectance (units unknown)."""

    exit_code = 2


class ProductError(EosegError, ValueError):
    """An archive product (Landsat / Sentinel-2 folder, metadata file, STAC item) cannot be used as a scene."""
