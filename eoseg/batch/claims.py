"""Who processes a scene now: exclusive claims, and cleanup of only what an attempt wrote itself.

A claim is the hidden file ``.<stem>.claim.json`` next to a scene's outputs, created with ``O_EXCL`` (so of
two writers, in one batch or in two batches on the same ``--out``, exactly one gets it). It holds a random
token, the batch id, host, pid and Dask worker. A claim is *stale* when its holder is gone: on this host,
its pid no longer runs, or now belongs to a process started after the claim was written (the number was
reused); on another host, it is older than :data:`FOREIGN_CLAIM_STALE_S` (there is no way to
ask another host's process table). A live claim is waited for (:func:`take_claim` polls); a stale one is
broken and the scene taken over (``recovered_from`` names the dead holder's worker).

An attempt that fails removes the files it renamed into place itself (the write journal of
:mod:`eoseg.outputs.atomic`), only while it still holds its claim, and only those that no other writer has
replaced since: a "zombie" attempt (Dask rescheduled the task while it still ran) never deletes the outputs or
the completion record of the attempt that finished the scene.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from eoseg.batch.jobs import SceneJob, TaskSpec, make_out_root, now
from eoseg.batch.records import read_json
from eoseg.errors import OutputExistsError
from eoseg.outputs.atomic import (
    Written,
    cleanup_temporaries,
    fsync_path,
    modified_at,
    output_files,
    pid_runs,
    remove_quietly,
    remove_written,
    unique_token,
)

CLAIM_POLL_S = 0.1
FOREIGN_CLAIM_STALE_S = 3600.0
UNREADABLE_CLAIM_S = 10.0  # a claim file being written is empty for a moment; older and unreadable: stale


@dataclass(frozen=True)
class Claim:
    """A claim this attempt holds: the file, its token, and the dead holder it took over from (if any)."""

    path: Path
    token: str
    recovered_from: str | None = None

    def held(self) -> bool:
        """Is the claim file still this attempt's (not broken as stale and taken by another attempt)?"""
        data = read_json(self.path)
        return data is not None and data.get("token") == self.token

    def release(self) -> None:
        if self.held():
            remove_quietly(self.path)


def _age_s(path: Path) -> float:
    modified = modified_at(path)
    return 0.0 if modified is None else time.time() - modified


def is_stale(data: dict | None, path: Path) -> bool:
    """Is the holder of the claim ``data`` (read from ``path``) gone?"""
    if data is None:
        return _age_s(path) > UNREADABLE_CLAIM_S
    if data.get("host") == socket.gethostname():
        return not pid_runs(data.get("pid"), modified_at(path))
    return _age_s(path) > FOREIGN_CLAIM_STALE_S


def _create(path: Path, body: dict) -> bool:
    """Create ``path`` with ``body`` only if it does not exist (``O_EXCL``); False when it does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(body, fh)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_path(path.parent)
    return True


def _break(path: Path, stale: dict | None) -> None:
    """Remove the stale claim at ``path``, unless it was replaced by a live one meanwhile (then leave that)."""
    grave = path.with_name(f"{path.name}.{unique_token()}.stale")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    moved = read_json(grave)
    if stale is not None and moved is not None and moved.get("token") != stale.get("token"):
        with contextlib.suppress(FileExistsError):
            os.link(grave, path)  # someone else's fresh claim: put it back
    remove_quietly(grave)


def _body(spec: TaskSpec, worker, token: str) -> dict:
    return {"batch": spec.batch_id, "token": token, "host": socket.gethostname(), "pid": os.getpid(),
            "worker": getattr(worker, "address", None), "worker_name": str(getattr(worker, "name", "")),
            "started": now()}


def _existing_outputs(job: SceneJob, spec: TaskSpec) -> list[Path]:
    plan = output_files(job.out_dir(spec.out_root), job.stem, probabilities=spec.settings.probabilities,
                        shoreline=spec.settings.shoreline)
    return [p for p in [*plan.files(), job.record_path(spec.out_root)] if p.exists()]


def check_replaceable(job: SceneJob, spec: TaskSpec, own: bool) -> None:
    """Raise :class:`OutputExistsError` when outputs exist and neither overwrite, resume nor a takeover from a
    dead attempt of this same batch (``own``) allows replacing them."""
    if spec.settings.overwrite or spec.resume or own:
        return
    existing = _existing_outputs(job, spec)
    if existing:
        raise OutputExistsError("output exists", path=existing[0],
                                fix="pass --overwrite, or --resume to keep the scenes that finished")


def try_claim(job: SceneJob, spec: TaskSpec, worker) -> Claim | None:
    """Take the scene's claim (breaking a stale one); None while another live attempt holds it.

    Raises :class:`OutputExistsError` (holding nothing, a stale claim left as it was) when the scene's outputs
    may not be replaced (:func:`check_replaceable`).
    """
    path = job.claim_path(spec.out_root)
    make_out_root(path.parent)
    token = unique_token()
    if _create(path, _body(spec, worker, token)):
        claim = Claim(path, token)
        try:
            check_replaceable(job, spec, own=False)
        except OutputExistsError:
            claim.release()
            raise
        return claim
    data = read_json(path)
    if not is_stale(data, path):
        return None
    own = data is not None and data.get("batch") == spec.batch_id
    check_replaceable(job, spec, own)
    _break(path, data)
    if _create(path, _body(spec, worker, token)):
        return Claim(path, token, recovered_from=data.get("worker") if own and data else None)
    return None


def prepare(job: SceneJob, spec: TaskSpec) -> None:
    """Under a fresh claim: no stale record or temporaries of the scene remain."""
    out_dir = job.out_dir(spec.out_root)
    remove_quietly(job.record_path(spec.out_root))
    cleanup_temporaries(out_dir, job.stem)


def undo(claim: Claim, journal: list[Written]) -> list[Path]:
    """After a failed attempt: remove what it wrote, if it still holds the claim (else remove nothing)."""
    if not claim.held():
        return []
    return remove_written(journal)


def break_if_stale(job: SceneJob, spec: TaskSpec) -> None:
    """Remove the scene's claim if its holder is gone (a run killed between its record and its release)."""
    path = job.claim_path(spec.out_root)
    if path.exists():
        data = read_json(path)
        if is_stale(data, path):
            _break(path, data)
