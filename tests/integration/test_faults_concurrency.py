"""Two `ansible-playbook` runs of one campaign at once (issue 5, item 6): the second is
refused by the campaign's run lock, naming the campaign and the run holding it, and
touches nothing; the first goes on and releases the lock at its end. Read from the
session's shared campaign (tests/fixtures/shared_campaign.py)."""

from __future__ import annotations

import pytest
from fixtures.faults import (
    assert_completed_exactly_once,
)
from fixtures.shared_campaign import CAMPAIGN, ON_SHARED_CAMPAIGN, SharedCampaign, exp_id

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@ON_SHARED_CAMPAIGN
def test_a_second_run_of_the_same_campaign_is_refused_naming_the_lock_holder(
    shared_campaign: SharedCampaign,
) -> None:
    """The session's shared campaign: its first run (cycle 1), and a second run of the same
    campaign started once the first had work in its manifest."""
    shared = shared_campaign
    lock = shared.results / "run.lock"
    second = shared.refused

    assert second.returncode != 0
    assert (
        f"campaign '{CAMPAIGN}' is already being run by ansible-playbook pid {shared.first_pid}"
        in second.output
    )
    assert f"lock file {lock}" in second.output
    assert "TASK [lem_host" not in second.output  # refused before any host task
    # The first run held the lock before and after the refusal, which changed no plan.
    assert shared.lock_during_refusal == (shared.first_pid, shared.first_pid)
    assert not shared.plan_changed_by_refusal

    assert shared.first.returncode == 0, shared.first.output[-4000:]
    # Released by the playbook that took it (lem_plan state=released, summary play); the
    # refused run, which never held it, stopped before that task.
    assert shared.lock_after_first == b""
    assert "TASK [Release the campaign's run lock]" in shared.first.output
    assert "TASK [Release the campaign's run lock]" not in second.output
    assert f"lem: campaign {CAMPAIGN}: 3 completed, 0 failed, 0 not run" in shared.first.output
    assert_completed_exactly_once(
        shared.host, CAMPAIGN, {exp_id(c, n) for c in ("bs1", "bs2", "hostile") for n in (1, 2)}
    )
