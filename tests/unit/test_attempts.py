"""Attempts that outlive their controller: finding them, waiting for them, and the
manifest's compare-and-replace that keeps an older attempt from overwriting a newer one."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.clock import FakeClock

from llenergymeasure.host.attempts import (
    AttemptLookupFailed,
    attempt_pids,
    attempt_pids_from_top,
    wait_for_attempts_to_end,
)
from llenergymeasure.host.manifest import (
    ManifestConflict,
    ManifestEntry,
    load_manifest,
    replace_entry,
)

EXP = "demo__bs1__c01"
# `docker compose top pytorch` while an experiment runs under the module's `timeout`.
TOP = f"""\
SERVICE   #   UID    PID     PPID    C    STIME   TTY   TIME       CMD
pytorch   1   root   26161   26136   0    23:51   ?     00:00:00   /sbin/docker-init -- lem worker
pytorch   1   root   26226   26161   3    23:51   ?     00:00:04   /opt/venv/bin/python /opt/venv/bin/lem worker
pytorch   1   root   26260   26136   0    23:52   ?     00:00:00   timeout --kill-after=30 3600 lem experiment /lem/state/configs/{EXP}.json --out /lem/state/results/{EXP} --exp-id {EXP} --config-hash 0123 --cycle 1
pytorch   1   root   26270   26260   9    23:52   ?     00:00:01   /opt/venv/bin/python /opt/venv/bin/lem experiment /lem/state/configs/{EXP}.json --exp-id {EXP} --cycle 1
pytorch   1   root   26290   26136   0    23:52   ?     00:00:00   lem experiment x.json --exp-id {EXP}0 --cycle 1
"""  # noqa: E501


def test_attempt_pids_finds_the_processes_of_that_exp_id_only() -> None:
    assert attempt_pids(TOP, EXP) == [26260, 26270]
    assert attempt_pids(TOP, "demo__bs2__c01") == []


def test_attempt_pids_reads_the_columns_from_each_header() -> None:
    older_layout = f"""\
lem-demo-pytorch-1
UID    PID     PPID   C   STIME   TTY   TIME       CMD
root   4242    4200   0   10:00   ?     00:00:00   lem experiment c.json --exp-id={EXP}
"""
    assert attempt_pids(older_layout, EXP) == [4242]
    assert attempt_pids("", EXP) == []
    assert attempt_pids(f"no header here --exp-id {EXP}", EXP) == []


def test_waiting_ends_when_the_earlier_attempt_ends() -> None:
    clock = FakeClock()
    answers = iter([[26260], [26260], []])

    left = wait_for_attempts_to_end(lambda: next(answers), 60, 1.0, clock, clock.sleep)

    assert left == []
    assert clock.sleeps == [1.0, 1.0]


def test_waiting_gives_up_at_the_limit_and_returns_what_still_runs() -> None:
    clock = FakeClock()

    left = wait_for_attempts_to_end(lambda: [26260], 2.5, 1.0, clock, clock.sleep)

    assert left == [26260]
    assert clock.now == pytest.approx(2.5)


def entry(status: str, attempts: int) -> ManifestEntry:
    return ManifestEntry(
        exp_id=EXP,
        config_name="bs1",
        config_hash="0123456789abcdef",
        backend="pytorch",
        service="pytorch",
        cycle=1,
        status=status,  # type: ignore[arg-type]
        attempts=attempts,
        started_at=f"2025-01-06T09:0{attempts}:00+00:00",
    )


def test_replace_entry_writes_while_the_entry_is_the_one_read(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    first = entry("running", 1)

    replace_entry(path, "demo", "localhost", None, first)
    replace_entry(path, "demo", "localhost", first, entry("completed", 1))

    assert load_manifest(path).entries[EXP].status == "completed"


def test_an_older_attempt_cannot_overwrite_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    older, newer = entry("running", 1), entry("running", 2)
    replace_entry(path, "demo", "localhost", None, older)
    replace_entry(path, "demo", "localhost", older, newer)  # the re-run takes over
    before = path.read_bytes()

    with pytest.raises(ManifestConflict) as refused:
        replace_entry(path, "demo", "localhost", older, entry("failed", 1))

    assert str(path) in str(refused.value) and EXP in str(refused.value)
    assert "attempt 2" in str(refused.value)
    assert path.read_bytes() == before
    with pytest.raises(ManifestConflict):  # nor a new attempt start on an unseen entry
        replace_entry(path, "demo", "localhost", None, entry("running", 1))


# -- a failed `docker compose top` is a failure, never "no earlier attempt" ----------------


def test_a_failed_top_is_an_error_not_an_empty_list() -> None:
    stderr = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n"

    with pytest.raises(AttemptLookupFailed) as failed:
        attempt_pids_from_top(1, "", stderr, EXP)

    assert str(failed.value) == (
        f"cannot tell whether an earlier attempt of {EXP} still runs (docker compose top "
        "failed: Cannot connect to the Docker daemon at unix:///var/run/docker.sock.): "
        "not started; run the campaign again"
    )


def test_a_failed_top_without_stderr_names_its_status_and_a_long_one_is_shortened() -> None:
    with pytest.raises(AttemptLookupFailed, match=r"failed: exit status 125\)"):
        attempt_pids_from_top(125, TOP, "", EXP)  # the table does not count: top failed
    with pytest.raises(AttemptLookupFailed) as failed:
        attempt_pids_from_top(1, "", "x" * 10_000, EXP)
    assert len(str(failed.value)) < 500


def test_a_successful_top_is_read_and_a_stopped_service_has_no_attempt() -> None:
    assert attempt_pids_from_top(0, TOP, "", EXP) == [26260, 26270]
    assert attempt_pids_from_top(0, "", "", EXP) == []  # compose's answer for a stopped service
