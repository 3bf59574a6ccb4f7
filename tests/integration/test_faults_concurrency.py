"""Two `ansible-playbook` runs of one campaign at once (issue 5, item 6): the second is
refused by the campaign's run lock, naming the campaign and the run holding it, and
touches nothing; the first goes on and releases the lock at its end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.campaign import (
    HostDirs,
    compose_down,
    manifest_entries,
    run_campaign,
    tiny_campaign,
    wait_for,
    write_yaml,
)
from fixtures.faults import (
    ControllerRun,
    PreparedHost,
    assert_completed_exactly_once,
    campaign_vars,
    local_inventory,
    summary_counts,
)
from python_on_whales import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CAMPAIGN = "lockfault"


@pytest.fixture
def host(
    tmp_path: Path, prepared_host: PreparedHost, cpu_image: str, docker_engine: DockerClient
) -> Iterator[HostDirs]:
    dirs = prepared_host.dirs(tmp_path / "host", "lem-lockfault")
    yield dirs
    compose_down(dirs.project)


def lock_holder(lock: Path) -> int | None:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))["pid"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def test_a_second_run_of_the_same_campaign_is_refused_naming_the_lock_holder(
    tmp_path: Path, host: HostDirs
) -> None:
    inventory = local_inventory(tmp_path / "inventory.yml")
    campaign_file = write_yaml(tmp_path / "campaign.yml", tiny_campaign(CAMPAIGN, cycles=1))
    results = tmp_path / "results"
    variables = campaign_vars(campaign_file, results, host)
    lock = results / CAMPAIGN / "run.lock"
    plan = results / CAMPAIGN / "plan.json"

    with ControllerRun(inventory, variables, tmp_path) as first:
        wait_for(lambda: manifest_entries(host.manifest(CAMPAIGN)), 900, "the first run's work")
        assert lock_holder(lock) == first.pid
        plan_before = plan.read_bytes()

        second = run_campaign(inventory, variables, tmp_path)

        assert second.returncode != 0
        assert (
            f"campaign '{CAMPAIGN}' is already being run by ansible-playbook pid {first.pid}"
            in second.output
        )
        assert f"lock file {lock}" in second.output
        assert "TASK [lem_host" not in second.output  # refused before any host task
        assert lock_holder(lock) == first.pid  # the refused run released nothing
        assert plan.read_bytes() == plan_before
        done = first.finish()

    assert done.returncode == 0, done.output[-4000:]
    assert lock.read_bytes() == b""  # released by the callback when the run ended
    assert_completed_exactly_once(
        host, CAMPAIGN, {f"{CAMPAIGN}__bs1__c01", f"{CAMPAIGN}__bs2__c01"}
    )
    assert summary_counts(results, CAMPAIGN) == {"bs1": 1, "bs2": 1}
