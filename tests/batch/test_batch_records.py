"""eoseg.batch.records: a scene's identity (size, mtime, optional checksum)."""

from __future__ import annotations

from eoseg.batch import (
    input_identity,
)


def test_identity_size_mtime_and_optional_checksum(tmp_path):
    path = tmp_path / "f.tif"
    path.write_bytes(b"abc")
    assert set(input_identity(path)) == {"size", "mtime_ns"}
    assert input_identity(path, checksum=True)["sha256"].startswith("ba7816bf")
