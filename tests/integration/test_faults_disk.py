"""Faults of the files (issue 5, items 5 and 8): the results disk fills up mid-campaign,
and a manifest is hand-corrupted. Real ansible-playbook, real Docker, the CPU image."""

from __future__ import annotations

import os
import subprocess
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
    assert_no_temp_files,
    campaign_vars,
    local_inventory,
    state_dir,
)
from python_on_whales import DockerClient

from llenergymeasure.host.manifest import Manifest, ManifestEntry, save_manifest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CAMPAIGN = "diskfault"
ALL = {f"{CAMPAIGN}__bs{b}__c{c:02d}" for b in (1, 2) for c in (1, 2)}
DISK_SIZE = "4m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for the host's state and the controller's results."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return local_inventory(tmp_path / "inventory.yml")


@pytest.fixture
def host_on_disk(
    small_disk: Path, prepared_host: PreparedHost, cpu_image: str, docker_engine: DockerClient
) -> Iterator[HostDirs]:
    dirs = prepared_host.dirs(small_disk / "host", "lem-diskfault")
    yield dirs
    compose_down(dirs.project)  # before the tmpfs goes: the service has it mounted


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file; returns it."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def test_a_full_disk_never_corrupts_the_manifest_and_the_error_names_the_path(
    tmp_path: Path, small_disk: Path, host_on_disk: HostDirs, inventory: Path
) -> None:
    campaign = tiny_campaign(CAMPAIGN)
    # Time to fill the disk after the first experiment, before the next one starts.
    campaign["execution"]["config_gap_seconds"] = 3
    campaign_file = write_yaml(tmp_path / "campaign.yml", campaign)
    variables = campaign_vars(campaign_file, small_disk / "results", host_on_disk)
    manifest = host_on_disk.manifest(CAMPAIGN)

    def one_completed() -> bool:
        return any(e["status"] == "completed" for e in manifest_entries(manifest).values())

    with ControllerRun(inventory, variables, tmp_path) as run:
        wait_for(one_completed, 900, "the first experiment to complete", poll=0.05)
        before = manifest.read_bytes()
        filler = fill(small_disk)
        full = run.finish()

    assert full.returncode != 0
    assert f"{manifest}: cannot write manifest: No space left on device" in full.output
    assert manifest.read_bytes() == before  # whole, as it was before the disk filled
    assert_no_temp_files(state_dir(host_on_disk, CAMPAIGN))

    filler.unlink()
    rerun = run_campaign(inventory, variables, tmp_path)

    assert rerun.returncode == 0, rerun.output[-4000:]
    entries = assert_completed_exactly_once(host_on_disk, CAMPAIGN, ALL)
    assert {e["attempts"] for e in entries.values()} == {1}


def test_a_truncated_manifest_stops_the_run_naming_the_file_and_is_left_as_it_was(
    tmp_path: Path,
    prepared_host: PreparedHost,
    cpu_image: str,
    docker_engine: DockerClient,
    inventory: Path,
) -> None:
    host = prepared_host.dirs(tmp_path / "host", "lem-diskfault")
    campaign_file = write_yaml(tmp_path / "campaign.yml", tiny_campaign(CAMPAIGN))
    variables = campaign_vars(campaign_file, tmp_path / "results", host)
    manifest = host.manifest(CAMPAIGN)
    manifest.parent.mkdir(parents=True)
    entry = ManifestEntry(
        exp_id=f"{CAMPAIGN}__bs1__c01",
        config_name="bs1",
        config_hash="0123456789abcdef",
        backend="pytorch",
        service="pytorch",
        cycle=1,
        status="completed",
        attempts=1,
    )
    save_manifest(
        manifest, Manifest(campaign_name=CAMPAIGN, host="localhost", entries={entry.exp_id: entry})
    )
    whole = manifest.read_bytes()
    manifest.write_bytes(whole[: len(whole) // 2])
    truncated = manifest.read_bytes()

    run = run_campaign(inventory, variables, tmp_path)

    assert run.returncode != 0
    assert f"{manifest}: not a valid manifest" in run.output
    assert "the file was left as it is" in run.output
    assert manifest.read_bytes() == truncated
    assert sorted(p.name for p in manifest.parent.iterdir()) == ["manifest.json"]
    assert "TASK [lem_services" not in run.output  # nothing was brought up
    assert "TASK [lem_experiments" not in run.output
