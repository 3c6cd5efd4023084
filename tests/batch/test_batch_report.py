"""eoseg.batch.report: the report of an output directory merges the outcomes of every run into it."""

from __future__ import annotations

import json
import threading

from eoseg.batch import report
from eoseg.batch.report import ReportWriter, merge_reports, read_report


def outcome(relpath: str, status: str, **kw) -> dict:
    return {"relpath": relpath, "status": status, "footprint": "POLYGON EMPTY", **kw}


def test_merge_replaces_a_scenes_line_except_with_skipped():
    earlier = [outcome("a.tif", "ok", worker="w1"), outcome("b.tif", "failed"), outcome("c.tif", "ok")]
    new = [outcome("b.tif", "ok"), outcome("a.tif", "skipped"), outcome("d.tif", "skipped"), outcome("c.tif", "failed")]
    merged = merge_reports(earlier, new)
    assert [(m["relpath"], m["status"]) for m in merged] == [("a.tif", "ok"), ("b.tif", "ok"), ("c.tif", "failed"),
                                                            ("d.tif", "skipped")]
    assert merged[0]["worker"] == "w1"  # the line of the run that did the scene stays


def test_a_second_run_into_one_out_keeps_the_first_runs_lines(tmp_path):
    path = tmp_path / "report.jsonl"
    first = ReportWriter(path)
    first.add(outcome("a.tif", "ok"))
    first.finish([outcome("a.tif", "ok"), outcome("b.tif", "failed")])
    second = ReportWriter(path)
    second.finish([outcome("b.tif", "ok"), outcome("c.tif", "ok")])
    lines = [json.loads(text) for text in path.read_text().splitlines()]
    assert [(line["relpath"], line["status"]) for line in lines] == [("a.tif", "ok"), ("b.tif", "ok"),
                                                                    ("c.tif", "ok")]
    assert all("footprint" not in line for line in lines)
    assert [p.name for p in tmp_path.iterdir()] == ["report.jsonl"]  # no temporary or lock file left


def test_runs_finishing_at_once_all_land(tmp_path, monkeypatch):
    """The second run reaches its merge while the first is inside its own: it waits for the first's report."""
    path = tmp_path / "report.jsonl"
    first_inside, second_done = threading.Event(), threading.Event()
    real = report.merge_reports

    def slow_merge(earlier, new):
        if new[0]["relpath"] == "first.tif":
            first_inside.set()
            second_done.wait(timeout=1)  # with the lock the second cannot finish meanwhile: this times out
        return real(earlier, new)

    monkeypatch.setattr(report, "merge_reports", slow_merge)
    first, second = ReportWriter(path), ReportWriter(path)
    one = threading.Thread(target=first.finish, args=([outcome("first.tif", "ok")],))
    one.start()
    assert first_inside.wait(timeout=10)
    two = threading.Thread(target=lambda: (second.finish([outcome("second.tif", "ok")]), second_done.set()))
    two.start()
    one.join()
    two.join()
    assert sorted(line["relpath"] for line in read_report(path)) == ["first.tif", "second.tif"]


def test_unreadable_lines_of_an_old_report_are_dropped(tmp_path):
    path = tmp_path / "report.jsonl"
    path.write_text('{"relpath": "a.tif", "status": "ok"}\nnot json\n[1, 2]\n{"status": "ok"}\n')
    assert read_report(path) == [{"relpath": "a.tif", "status": "ok"}]
    assert read_report(tmp_path / "none.jsonl") == []
