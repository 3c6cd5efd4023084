"""A batch's outcome: the per-scene report (``report.jsonl``) and the printed table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eoseg.outputs.atomic import publish, remove_dead_temporaries, temporary_path

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
        self.fh.close()
        with open(self.tmp, "w", encoding="utf-8") as fh:
            fh.writelines(self.line(o) for o in ordered)
        publish(self.tmp, self.path)

    def abandon(self) -> None:
        self.fh.close()


def count_statuses(results: list[dict]) -> dict[str, int]:
    return {status: sum(r["status"] == status for r in results) for status in STATUSES}
