"""The campaign's ETA: per-host pace from measured intervals, hosts in parallel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.controller.progress import Pace, eta_seconds, format_duration, manifests_eta
from llenergymeasure.host.manifest import Manifest, ManifestEntry, save_manifest

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def test_eta_is_the_slowest_hosts_remaining_work() -> None:
    intervals = {"a": [10.0, 12.0, 11.0], "b": [30.0, 31.0]}
    # a: 5 left x 11 s = 55 s; b: 2 left x 30.5 s = 61 s; hosts run in parallel
    assert eta_seconds(intervals, {"a": 5, "b": 2}) == pytest.approx(61.0)
    # an unmeasured host takes the median pace of the others: 3 x median(11, 30.5)
    assert eta_seconds(intervals, {"c": 3}) == pytest.approx(3 * 20.75)
    assert eta_seconds({}, {"a": 3}) is None
    assert eta_seconds(intervals, {"a": 0}) == 0.0


def test_a_resume_break_does_not_swamp_the_pace() -> None:
    # one 8-hour interval (the campaign was resumed the next morning) among 10 s ones
    assert eta_seconds({"a": [10.0, 28_800.0, 10.0, 11.0]}, {"a": 6}) == pytest.approx(63.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4.4, "4 s"), (59.6, "1m00s"), (605, "10m05s"), (3 * 3600 + 7 * 60, "3h07m")],
)
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_pace_measures_intervals_and_ignores_experiments_completed_before() -> None:
    pace = Pace()
    pace.started("a", 100.0)
    assert pace.finished("a", 100.1, skipped=True) is None  # completed before: no interval
    pace.started("a", 100.2)
    assert pace.finished("a", 112.2) == pytest.approx(12.0)
    pace.started("a", 115.0)  # 2.8 s of health check and gap between the two
    assert pace.finished("a", 127.2) == pytest.approx(12.2)
    assert pace.intervals == {"a": [pytest.approx(12.1), pytest.approx(15.0)]}
    assert pace.line_suffix("completed", 12.2, {"a": 4}) == (
        ", completed in 12 s; 4 left, ETA 54 s"  # 4 x median(12.1, 15.0) = 54.2
    )
    assert pace.line_suffix("failed", 3.0, {}) == " (after 3 s); campaign done"


def manifest(host: str, finished_minutes: list[int], left: int) -> Manifest:
    entries = {}
    for k, minute in enumerate(finished_minutes):
        entries[f"c__x__c{k:02d}"] = entry(k, "completed", T0 + timedelta(minutes=minute))
    for k in range(len(finished_minutes), len(finished_minutes) + left):
        entries[f"c__x__c{k:02d}"] = entry(k, "pending", None)
    return Manifest(campaign_name="c", host=host, entries=entries)


def entry(k: int, status: str, completed: datetime | None) -> ManifestEntry:
    return ManifestEntry(
        exp_id=f"c__x__c{k:02d}",
        config_name="x",
        config_hash="0" * 16,
        backend="pytorch",
        service="pytorch",
        cycle=k + 1,
        status=status,  # type: ignore[arg-type]
        completed_at=completed.isoformat() if completed else None,
    )


def test_manifests_give_the_eta_of_a_running_campaign(tmp_path: Path) -> None:
    fast = manifest("gpu-a", [0, 2, 4, 6], left=3)  # 2 min each, 3 left: 6 min
    slow = manifest("gpu-b", [0, 5, 10], left=2)  # 5 min each, 2 left: 10 min
    assert manifests_eta([fast, slow]) == pytest.approx(600.0)
    for m in (fast, slow):
        path = tmp_path / m.host / "manifest.json"
        path.parent.mkdir()
        save_manifest(path, m)
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ETA: 10m00s for 5 experiment(s) left" in result.stdout


def test_no_eta_when_done_or_not_measured(tmp_path: Path) -> None:
    assert manifests_eta([manifest("a", [0], left=3)]) is None  # one finish: no interval yet
    done = manifest("a", [0, 1, 2], left=0)
    path = tmp_path / "manifest.json"
    save_manifest(path, done)
    assert "ETA" not in CliRunner().invoke(app, ["status", str(path)]).stdout


def _event(kind: str, action: str, res: dict[str, object]) -> dict[str, object]:
    return {"event": kind, "event_data": {"task_action": action, "host": "h1", "res": res}}


def _item(exp: str, changed: bool) -> dict[str, object]:
    return {
        "exp_id": exp,
        "config_name": "a",
        "cycle": int(exp[-1]),
        "host": "h1",
        "status": "completed",
        "changed": changed,
        "metrics": {"energy_j": 41.2, "output_tokens_per_s": 1520.0},
    }


def test_lem_run_counts_every_experiment_of_a_resumed_or_finished_campaign() -> None:
    import io

    from llenergymeasure.commands.drive import Progress, _EventStream
    from llenergymeasure.results.lines import experiment_line

    seen: list[Progress] = []
    stream = _EventStream(io.StringIO(), seen.append)
    done_before = [_item(f"e{i}", False) for i in (1, 2, 3, 4)]
    stream(_event("runner_on_ok", "lem_plan", {"total": 6}))
    stream(_event("runner_on_ok", "lem_manifest", {"completed": done_before, "failed_kept": []}))
    # a loop: items one by one, then the loop's final result repeating them
    for exp, changed in (("e4", False), ("e5", True), ("e6", True)):
        stream(_event("runner_item_on_ok", "ansible.legacy.lem_experiment", _item(exp, changed)))
    stream(_event("runner_on_ok", "lem_experiment", {"results": [_item("e7", True)]}))
    assert [(p.total, p.done) for p in seen] == [(6, 0), (6, 4), (6, 4), (6, 5), (6, 6)]
    # the same line as the campaign callback's
    assert seen[-1].line == experiment_line(_item("e6", True), 6, 6)
    assert seen[-1].line == "[6/6] cfg=a cycle=6 host=h1 41.2 J 1520 tok/s"
    assert seen[2].line is not None and seen[2].line.endswith("(completed before)")
