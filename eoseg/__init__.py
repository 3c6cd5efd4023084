"""eoseg: coastal segmentation of GeoTIFF scenes (water, white-water, sand, other).

The public API (imported lazily so that ``eoseg --help`` stays fast):

- ``open_scene``, ``preflight`` — open a GeoTIFF, map its bands to model roles, read-check it
- ``tile_scene`` — cut a scene (and labels) into georeferenced tiles with an index
- ``predict_scene``, ``Predictor`` — segment a scene into COG / polygons / QGIS style / STAC
- ``load_bundle``, ``build_model`` — model bundles and the architecture registry
- ``make_dataset``, ``train``, ``evaluate_bundle``, ``evaluate_rasters`` — training and evaluation
- ``run_batch`` — many scenes on Dask
- ``label_scene`` — dense training labels from a few strokes (``eoseg label``)
- ``trace_shoreline``, ``make_transects``, ``chainages``, ``shoreline_timeseries`` — shorelines and their change
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "open_scene": "eoseg.scene",
    "preflight": "eoseg.scene",
    "tile_scene": "eoseg.tiles",
    "predict_scene": "eoseg.predict",
    "Predictor": "eoseg.predict",
    "PredictSettings": "eoseg.predict",
    "load_bundle": "eoseg.bundle",
    "save_bundle": "eoseg.bundle",
    "build_model": "eoseg.models",
    "make_dataset": "eoseg.dataset",
    "train": "eoseg.train",
    "evaluate_bundle": "eoseg.evaluate",
    "evaluate_rasters": "eoseg.evaluate",
    "run_batch": "eoseg.batch",
    "label_scene": "eoseg.strokes",
    "COASTAL": "eoseg.classes",
    "trace_shoreline": "eoseg.outputs.shoreline",
    "make_transects": "eoseg.transects",
    "chainages": "eoseg.transects",
    "shoreline_timeseries": "eoseg.timeseries",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'eoseg' has no attribute {name!r}")
