"""What `lem_manifest` and `lem_plan` do, without Ansible: the host's share sorted by its
manifest (dispatch/share.py), the ownership check, and preparing a campaign run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.plan import manifest_entry
from fixtures.results import make_result, write_result

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.controller import prepare
from llenergymeasure.controller.plan import PlannedExperiment, build_plan
from llenergymeasure.dispatch.share import share_status
from llenergymeasure.errors import LemError, ManifestError, ManifestLockError
from llenergymeasure.host.manifest import (
    Manifest,
    ManifestEntry,
    check_owner,
    save_manifest,
)

CAMPAIGN = "utest"
CONFIG = {
    "backend": "pytorch",
    "model": {"path": "/models/tiny"},
    "decoder": {"max_new_tokens": 4},
    "dataset": {"name": "builtin:short-prompts", "num_prompts": 2},
}


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "campaign.yml"
    configs = [{"config_name": name, **CONFIG} for name in ("a", "b")]
    body = {"campaign_name": CAMPAIGN, "configs": configs, "execution": {"cycles": 1}}
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


@pytest.fixture
def share(campaign_file: Path) -> list[PlannedExperiment]:
    return build_plan(load_campaign(campaign_file), ["localhost"]).experiments


def params(state_dir: Path, share: list[PlannedExperiment], **changes: Any) -> dict[str, Any]:
    return {
        "state_dir": str(state_dir),
        "campaign_name": CAMPAIGN,
        "host": "localhost",
        "experiments": [e.model_dump(mode="json") for e in share],
        "retry_failed": True,
    } | changes


def save(state_dir: Path, *entries: ManifestEntry, host: str = "localhost") -> None:
    manifest = Manifest(campaign_name=CAMPAIGN, host=host, entries={e.exp_id: e for e in entries})
    save_manifest(state_dir / "manifest.json", manifest)


def complete(
    state_dir: Path, experiment: PlannedExperiment, config_hash: str | None = None
) -> None:
    result = make_result(
        experiment.config_name,
        experiment.cycle,
        campaign_name=CAMPAIGN,
        config_hash=config_hash or experiment.config_hash,
        energy_j=7.0,
    )
    write_result(state_dir / "results", result)


def test_an_empty_manifest_leaves_everything_pending(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    returned = share_status(params(tmp_path, share))

    assert returned["counts"] == {"total": 2, "completed": 0, "pending": 2, "failed": 0}
    assert [item["reason"] for item in returned["pending"]] == ["new", "new"]


def test_the_share_is_sorted_by_the_manifest(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    a1, b1 = share
    complete(tmp_path, a1)
    done = manifest_entry(
        a1, status="completed", attempts=1, result_path=f"results/{a1.exp_id}/result.json"
    )
    save(tmp_path, done, manifest_entry(b1, status="failed", attempts=2, error="oom"))

    returned = share_status(params(tmp_path, share, retry_failed=False))

    assert returned["counts"] == {"total": 2, "completed": 1, "pending": 0, "failed": 1}
    assert returned["completed"][0]["metrics"]["energy_j"] == 7.0
    assert returned["failed_kept"] == [
        {"exp_id": b1.exp_id, "config_name": "b", "cycle": 1, "host": "localhost"}
        | {"attempts": 2, "error": "oom"}
    ]


def test_a_completed_result_of_another_experiment_runs_again(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    a1 = share[0]
    complete(tmp_path, a1, config_hash="ffffffffffffffff")
    save(tmp_path, manifest_entry(a1, status="completed", attempts=1))

    pending = share_status(params(tmp_path, share))["pending"]

    assert pending[0]["reason"] == "result-missing"
    assert "result is for " in pending[0]["detail"] and "not " in pending[0]["detail"]


def test_a_manifest_of_another_host_is_refused(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    save(tmp_path, host="gpu1")

    with pytest.raises(ManifestError, match="host is 'gpu1', not 'localhost': refusing to mix"):
        share_status(params(tmp_path, share))


def test_an_entry_of_another_host_is_refused(
    tmp_path: Path, share: list[PlannedExperiment]
) -> None:
    with pytest.raises(LemError, match=r"experiments\[0\]\.host: 'localhost' is not this host"):
        share_status(params(tmp_path, share, host="gpu1"))


def test_check_owner_accepts_an_unclaimed_manifest_and_its_owner() -> None:
    check_owner(Manifest(), "m.json", CAMPAIGN, "h")
    check_owner(Manifest(campaign_name=CAMPAIGN, host="h"), "m.json", CAMPAIGN, "h")
    with pytest.raises(ManifestError, match=r"m\.json: campaign_name is 'other'"):
        check_owner(Manifest(campaign_name="other", host="h"), "m.json", CAMPAIGN, "h")


# -- lem_plan ---------------------------------------------------------------------------


def plan_params(campaign_file: Path, tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return {
        "campaign_file": str(campaign_file),
        "hosts": ["localhost"],
        "results_dir": str(tmp_path / "results"),
        "plan_file": None,
        "replan": False,
    } | changes


def test_a_dry_run_plans_without_writing_or_locking(campaign_file: Path, tmp_path: Path) -> None:
    returned = prepare.plan_campaign(plan_params(campaign_file, tmp_path), dry_run=True)

    assert returned["plan_file"] == str(tmp_path / "results" / CAMPAIGN / "plan.json")
    assert (returned["run_lock"], returned["total"], returned["changed"]) == (None, 2, True)
    assert not (tmp_path / "results").exists()


def test_without_an_ansible_playbook_above_it_the_run_lock_is_refused(
    campaign_file: Path, tmp_path: Path
) -> None:
    plan_file = tmp_path / "elsewhere" / "plan.json"

    with pytest.raises(ManifestLockError, match="no ansible-playbook process above"):
        prepare.plan_campaign(plan_params(campaign_file, tmp_path, plan_file=str(plan_file)), False)

    assert not plan_file.exists()
