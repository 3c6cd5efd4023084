"""A batch's outcome: the per-scene report (``report.jsonl``) and the printed table.

``report.jsonl`` is the record of an output directory, one line per scene ever processed into it: a batch
merges its outcomes into the report already there (under an exclusive lock, so two batches finishing on one
``--out`` at once both land). A scene's new line replaces its old one, except "skipped" (done before), which
keeps the line of the run that did it; scenes of other runs keep their lines.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eoseg.outputs.atomic import publish, remove_dead_temporaries, temporary_path

try:
    import fcntl
except ImportError:  # Windows: no flock; runs finishing at the same moment may then drop each other's lines
    fcntl = None

REPORT_NAME = "report.jsonl"


STATUSES = ("ok", "failed", "skipped", "too_cloudy")


@dataclass(frozen=True)
class BatchReport:
    """What a batch did: one plain dict per scene (input order), counts by status, where the report is."""

    results: list[dict]
    counts: dict[str, int]
    report_path: Path
    summary_path: Path | None
    seconds: float
    workers: int
    dashboard: str | None = None
    timeseries_path: Path | None = None  # shoreline_timeseries.csv with --transects

    @property
    def ok(self) -> bool:
        """True when no scene failed (skipped scenes finished in an earlier run)."""
        return self.counts.get("failed", 0) == 0

    @property
    def scenes_per_second(self) -> float:
        return len(self.results) / max(self.seconds, 1e-9)

    def table(self) -> str:
        """A short plain-text summary: counts by status, then the failed scenes with their errors."""
        lines = [f"{'status':<8} {'scenes':>6}"]
        lines += [f"{status:<8} {self.counts.get(status, 0):>6}" for status in STATUSES]
        lines.append(f"{'total':<8} {len(self.results):>6}   in {self.seconds:.1f} s "
                     f"({self.scenes_per_second:.2f} scenes/s, {self.workers} worker(s))")
        failed = [r for r in self.results if r["status"] == "failed"]
        if failed:
            lines.append("failed:")
            lines += [f"  {r['relpath']}: {r['error_type']}: {r['error']}" for r in failed]
        cloudy = [r for r in self.results if r["status"] == "too_cloudy"]
        if cloudy:
            lines.append("too cloudy (skipped):")
            lines += [f"  {r['relpath']}: {r['error']}" for r in cloudy]
        lines.append(f"report: {self.report_path}")
        if self.summary_path:
            lines.append(f"summary: {self.summary_path}")
        if self.timeseries_path:
            lines.append(f"shoreline time series: {self.timeseries_path}")
        return "\n".join(lines)


class ReportWriter:
    """Streams outcomes to a hidden temporary as they arrive; :meth:`finish` writes the report in input order."""

    def __init__(self, path: Path):
        self.path = path
        remove_dead_temporaries(path)  # of runs killed before they finished their report
        self.tmp = temporary_path(path)
        self.fh = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in finish()

    @staticmethod
    def line(outcome: dict) -> str:
        """One JSON line; the footprint (for the .gpkg summary only) is left out to keep lines short."""
        return json.dumps({k: v for k, v in outcome.items() if k != "footprint"}, default=str) + "\n"

    def add(self, outcome: dict) -> None:
        self.fh.write(self.line(outcome))
        self.fh.flush()

    def finish(self, ordered: list[dict]) -> None:
        """Merge ``ordered`` (this run's outcomes, input order) into the report already at :attr:`path`."""
        self.fh.close()
        with _locked(self.path):
            merged = merge_reports(read_report(self.path), ordered)
            with open(self.tmp, "w", encoding="utf-8") as fh:
                fh.writelines(self.line(line) for line in merged)
            publish(self.tmp, self.path)

    def abandon(self) -> None:
        self.fh.close()


def read_report(path: Path) -> list[dict]:
    """The lines of an existing report; lines that are not JSON objects with a ``relpath`` are dropped."""
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            line = json.loads(text)
            if isinstance(line, dict) and "relpath" in line:
                lines.append(line)
    return lines


def merge_reports(earlier: list[dict], new: list[dict]) -> list[dict]:
    """``earlier`` with each scene's line replaced by its ``new`` one (unless that is "skipped"), then the new
    scenes in their order."""
    merged = {line["relpath"]: line for line in earlier}
    for line in new:
        if line["status"] != "skipped" or line["relpath"] not in merged:
            merged[line["relpath"]] = line
    return list(merged.values())


@contextlib.contextmanager
def _locked(report: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``report``'s directory (no lock file is left; the OS releases the lock if
    the process dies)."""
    if fcntl is None:
        yield
        return
    fd = os.open(report.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def count_statuses(results: list[dict]) -> dict[str, int]:
    return {status: sum(r["status"] == status for r in results) for status in STATUSES}
