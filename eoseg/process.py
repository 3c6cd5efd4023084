"""Process-wide tuning that programs opt into: eoseg's library calls never change process state.

The ``eoseg`` CLI calls :func:`tune_process` once at start, and a batch worker process once when it starts;
a Python user may call it too (it is what the measured CLI speed and memory figures assume):

- glibc keeps freed memory mapped (``mallopt``) instead of returning large blocks to the system after each
  batch, which otherwise re-faults fresh pages for every forward pass (a tiled CPU run 1.6× faster);
- GDAL's raster block cache is bounded (:func:`block_rows_cache_bytes`). GDAL's default is 5 % of RAM, and it
  fills with the whole scene as strips are read; two block rows across the widest scene are all the
  overlapping tile rows re-read.

GDAL's cache size is one number for the whole process: ``rasterio.Env(GDAL_CACHEMAX=...)`` calls
``GDALSetCacheMax64`` (rasterio 1.4 special-cases this option; other options are thread-local outside the
main thread), so setting it per scene races between scenes predicted on threads. It is set here, once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio

log = logging.getLogger(__name__)

MIN_GDAL_CACHE = 64 * 2**20
DEFAULT_GDAL_CACHE = 256 * 2**20  # two 512-row block rows of a full Landsat scene (7,750 px, 6 × float32) fit


def block_rows_cache_bytes(path: str | os.PathLike, rows: int = 2) -> int:
    """Bytes of GDAL block cache holding ``rows`` full-width block rows of every band of ``path``.

    rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64, i.e. in bytes (not GDAL's "< 100000
    means MB" rule): 64 means 64 bytes and no cache at all (measured here: tile reads 19× slower).
    """
    from eoseg.errors import EosegError
    from eoseg.products import find_product

    try:
        product = find_product(path)
        files = [b.href for b in product.bands] if product is not None else [path]  # a product: each band file
        need = 0
        for file in files:
            with rasterio.open(file) as ds:
                block_h = ds.block_shapes[0][0]
                itemsize = np.dtype(ds.dtypes[0]).itemsize
                need += rows * block_h * ds.width * ds.count * itemsize
    except (rasterio.errors.RasterioError, EosegError):
        return MIN_GDAL_CACHE  # open_scene reports the problem
    return max(MIN_GDAL_CACHE, need + 16 * 2**20)


def keep_freed_memory_mapped() -> bool:
    """Ask glibc to keep freed memory instead of unmapping it, so each batch does not re-fault pages.

    Large tensors are otherwise mmap'ed and unmapped per batch (measured in DESIGN.md: a tiled CPU run
    became 1.6× faster). A no-op off glibc; returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 1 << 30)
    # one arena for every thread: the predict pipeline's stage threads reuse what another stage freed, as the
    # serial loop did, instead of each thread's arena keeping its own peak
    libc.mallopt(m_arena_max, 1)
    return True


def gdal_cache_max() -> int:
    """GDAL's block cache size in bytes (process-wide)."""
    return int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))


def set_gdal_cache_max(nbytes: int) -> None:
    """Set GDAL's block cache size for the whole process (bytes)."""
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", int(nbytes))


def tune_process(scenes: Iterable[str | os.PathLike] = (), *, cpu: bool = True) -> dict:
    """Apply eoseg's process-wide settings once: call from a program's start, never from a library.

    ``scenes``: the scenes this process will read, to size GDAL's cache for the widest (default
    :data:`DEFAULT_GDAL_CACHE` when unknown, e.g. in a batch worker). ``cpu``: whether models run on the CPU
    (only then is glibc's malloc tuned). Returns what was set.
    """
    sizes = [block_rows_cache_bytes(Path(s)) for s in scenes]
    cache = max(sizes) if sizes else DEFAULT_GDAL_CACHE
    set_gdal_cache_max(cache)
    malloc = keep_freed_memory_mapped() if cpu else False
    log.debug("process tuning: GDAL cache %d MiB, glibc keeps freed memory mapped: %s", cache >> 20, malloc)
    return {"gdal_cache_bytes": cache, "keep_freed_memory_mapped": malloc}


__all__ = ["block_rows_cache_bytes", "gdal_cache_max", "keep_freed_memory_mapped", "set_gdal_cache_max",
           "tune_process"]
