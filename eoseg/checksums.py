"""File checksums (completion records, model bundle identity)."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def file_sha256(*paths: str | os.PathLike) -> str:
    """Hex sha256 over the bytes of ``paths``, one after the other (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()
