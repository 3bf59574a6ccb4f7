"""The plan: ids, hashes, orders, host assignment, and the plan file's reuse rules."""

from __future__ import annotations

import hashlib
import itertools
import json
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest

from llenergymeasure.config.loader import LoadedCampaign, load_campaign, parse_campaign
from llenergymeasure.config.models import GpuKnobsConfig
from llenergymeasure.controller.plan import (
    Plan,
    PlannedExperiment,
    build_plan,
    campaign_hash,
    config_hash,
    exp_id,
    host_share_of,
    plan_json,
    plan_or_reuse,
    read_plan,
    run_order,
    write_plan,
)
from llenergymeasure.errors import ConfigError

SOURCE = Path("campaigns/demo.yml")


def config(name: str, batch_size: int = 1) -> dict[str, Any]:
    return {
        "config_name": name,
        "backend": "pytorch",
        "model": {"path": "/models/tiny"},
        "pytorch": {"batch_size": batch_size},
    }


def campaign(
    names: list[str], cycles: int = 3, order: str = "interleaved", seed: int = 42
) -> LoadedCampaign:
    data = {
        "campaign_name": "demo",
        "configs": [config(name) for name in names],
        "execution": {"cycles": cycles, "order": order, "seed": seed},
    }
    return parse_campaign(data, SOURCE)


def pairs(plan: Plan) -> list[tuple[str, int]]:
    return [(e.config_name, e.cycle) for e in plan.experiments]


ABC = ["a", "b", "c"]


def test_exp_id_is_campaign_config_and_two_digit_cycle() -> None:
    assert exp_id("demo", "tiny-bs1", 3) == "demo__tiny-bs1__c03"
    assert exp_id("demo", "x", 12) == "demo__x__c12"


def test_config_hash_is_sha256_of_the_canonical_resolved_config() -> None:
    resolved = campaign(["a"]).configs[0]
    # an unset gpu section and unset later keys are left out, so configs from before them
    # keep their hash
    dumped = resolved.model_dump(mode="json", exclude={"gpu"})
    if "pytorch" in dumped:
        dumped["pytorch"] = {k: v for k, v in dumped["pytorch"].items() if not k.startswith("cb_")}
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    assert config_hash(resolved) == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_a_set_gpu_knob_changes_the_hash_and_an_all_null_one_does_not() -> None:
    plain = campaign(["a"]).configs[0]
    nulls = plain.model_copy(update={"gpu": GpuKnobsConfig()})
    clocked = plain.model_copy(update={"gpu": GpuKnobsConfig(sm_clock_mhz=1200)})
    assert config_hash(nulls) == config_hash(plain)
    assert config_hash(clocked) != config_hash(plain)


def test_unset_server_cache_keys_leave_a_pytorch_hash_as_it_was_before_them() -> None:
    plain = campaign(["a"]).configs[0]
    assert plain.pytorch is not None
    before = plain.model_dump(mode="json", exclude={"gpu"})
    before["pytorch"] = {k: v for k, v in before["pytorch"].items() if not k.startswith("cb_")}
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert config_hash(plain) == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    sized = plain.model_copy(
        update={"pytorch": plain.pytorch.model_copy(update={"cb_num_blocks": 64})}
    )
    assert config_hash(sized) != config_hash(plain)


def test_each_cycle_groups_one_backend_s_configs_by_knob_setting() -> None:
    # configs 0..5 on one backend, alternating two SM clocks: each cycle runs one clock's
    # configs, then the other's, so the host changes clocks once per cycle, not five times
    knobs = ["900", "1980"] * 3
    for order in ("interleaved", "shuffled"):
        pairs = run_order(6, 3, order, 5, backends=["pytorch"] * 6, knobs=knobs)
        for cycle in (1, 2, 3):
            settings = [knobs[i] for i, c in pairs if c == cycle]
            switches = sum(a != b for a, b in itertools.pairwise(settings))
            assert switches == 1, (order, cycle, settings)


def test_backends_stay_the_outer_group_and_knobs_the_inner() -> None:
    backends = ["vllm", "pytorch", "vllm", "pytorch"]
    knobs = ["a", "a", "b", "b"]
    pairs = run_order(4, 1, "interleaved", 0, backends=backends, knobs=knobs)
    assert [i for i, _ in pairs] == [0, 2, 1, 3]


def test_config_hash_follows_content_not_key_order() -> None:
    reordered = dict(reversed(list(config("a").items())))
    same = parse_campaign({"campaign_name": "demo", "configs": [reordered]}, SOURCE)
    other = parse_campaign({"campaign_name": "demo", "configs": [config("a", 2)]}, SOURCE)
    base = config_hash(campaign(["a"]).configs[0])
    assert config_hash(same.configs[0]) == base
    assert config_hash(other.configs[0]) != base


def test_the_same_campaign_gives_byte_identical_plans() -> None:
    assert plan_json(build_plan(campaign(ABC, order="shuffled"))) == plan_json(
        build_plan(campaign(ABC, order="shuffled"))
    )


def test_grouped_runs_all_cycles_of_a_config_together() -> None:
    plan = build_plan(campaign(["a", "b"], cycles=3, order="grouped"))
    assert pairs(plan) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]


def test_interleaved_runs_cycle_by_cycle_in_config_order() -> None:
    plan = build_plan(campaign(["a", "b"], cycles=3, order="interleaved"))
    assert pairs(plan) == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]


def test_shuffled_permutes_configs_within_each_cycle() -> None:
    names = [f"c{i}" for i in range(8)]
    plan = build_plan(campaign(names, cycles=3, order="shuffled"))
    cycles = [e.cycle for e in plan.experiments]
    assert cycles == sorted(cycles)
    for cycle in (1, 2, 3):
        in_cycle = [e.config_name for e in plan.experiments if e.cycle == cycle]
        assert sorted(in_cycle) == sorted(names)
    assert [n for n, _ in pairs(plan)][:8] != names  # 1 chance in 40,320 of a false failure


def test_shuffled_changes_with_the_seed_and_not_otherwise() -> None:
    names = [f"c{i}" for i in range(8)]
    seed_1 = pairs(build_plan(campaign(names, order="shuffled", seed=1)))
    assert pairs(build_plan(campaign(names, order="shuffled", seed=1))) == seed_1
    assert pairs(build_plan(campaign(names, order="shuffled", seed=1), ["h1", "h2"])) == seed_1
    assert pairs(build_plan(campaign(names, order="shuffled", seed=2))) != seed_1


def test_the_shuffle_is_fixed_across_machines() -> None:
    # random.Random seeded with a str is specified (SHA-512 of the string) and stable
    # (pinned: a change here would re-order every existing shuffled campaign)
    cycle_1 = [(0, 1), (3, 1), (2, 1), (1, 1)]
    cycle_2 = [(1, 2), (0, 2), (3, 2), (2, 2)]
    assert run_order(4, 2, "shuffled", 42) == cycle_1 + cycle_2


def test_other_orders_ignore_the_seed() -> None:
    for order in ("grouped", "interleaved"):
        assert run_order(5, 3, order, 1) == run_order(5, 3, order, 2)


@pytest.mark.parametrize("order", ["grouped", "interleaved", "shuffled"])
def test_every_config_cycle_pair_appears_exactly_once(order: str) -> None:
    plan = build_plan(campaign(ABC, cycles=4, order=order))
    assert sorted(pairs(plan)) == sorted((n, c) for n in ABC for c in range(1, 5))
    assert [e.position for e in plan.experiments] == list(range(12))
    assert len({e.exp_id for e in plan.experiments}) == 12


def test_entries_carry_the_resolved_config_its_hash_and_backend() -> None:
    loaded = campaign(["a"])
    [first, *_] = build_plan(loaded).experiments
    assert first.config == loaded.configs[0]
    assert first.config_hash == config_hash(loaded.configs[0])
    assert first.backend == "pytorch"
    assert first.exp_id == "demo__a__c01"


def test_default_host_is_localhost() -> None:
    plan = build_plan(campaign(ABC))
    assert plan.hosts == ["localhost"]
    assert {e.host for e in plan.experiments} == {"localhost"}


def test_hosts_are_assigned_round_robin_by_config() -> None:
    names = ["a", "b", "c", "d", "e"]
    plan = build_plan(campaign(names, order="shuffled"), ["h1", "h2"])
    expected = {"a": "h1", "b": "h2", "c": "h1", "d": "h2", "e": "h1"}
    assert {e.config_name: e.host for e in plan.experiments} == expected
    for name, host in expected.items():  # every cycle of a config on the same hardware
        assert {e.host for e in plan.experiments if e.config_name == name} == {host}


def host_share(plan: Plan, host: str) -> list[PlannedExperiment]:
    """The share the playbook's filter takes: the package's one rule over the plan."""
    return host_share_of(plan.experiments, host, attrgetter("host"), attrgetter("position"))


def test_host_share_keeps_plan_order() -> None:
    plan = build_plan(campaign(ABC, cycles=2), ["h1", "h2"])
    share = host_share(plan, "h1")
    assert [(e.config_name, e.cycle) for e in share] == [("a", 1), ("c", 1), ("a", 2), ("c", 2)]
    assert [e.position for e in share] == sorted(e.position for e in share)
    assert host_share(plan, "nobody") == []


def test_host_share_orders_by_position_whatever_the_list_order() -> None:
    plan = build_plan(campaign(ABC, cycles=2), ["h1", "h2"])
    reordered = plan.model_copy(update={"experiments": plan.experiments[::-1]})
    assert host_share(reordered, "h1") == host_share(plan, "h1")


@pytest.mark.parametrize(
    ("hosts", "message"),
    [([], "at least one host"), (["h1", "h1"], "h1 listed more than once"), ([""], "''")],
)
def test_bad_host_lists_are_refused(hosts: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_plan(campaign(ABC), hosts)


def test_campaign_hash_follows_configs_and_settings_not_the_file_path() -> None:
    base = campaign_hash(campaign(ABC))
    moved = parse_campaign(
        {"campaign_name": "demo", "configs": [config(n) for n in ABC], "execution": {"cycles": 3}},
        Path("elsewhere/demo.yml"),
    )
    assert campaign_hash(moved) == base
    assert campaign_hash(campaign(ABC, cycles=4)) != base
    assert campaign_hash(campaign(["a", "b"])) != base


def test_write_then_read_gives_the_same_plan_and_no_temp_file(tmp_path: Path) -> None:
    plan = build_plan(campaign(ABC), ["h1", "h2"])
    path = tmp_path / "results" / "demo" / "plan.json"
    write_plan(plan, path)
    assert read_plan(path) == plan
    assert path.read_text(encoding="utf-8") == plan_json(plan)
    assert [p.name for p in path.parent.iterdir()] == ["plan.json"]


def test_an_unparsable_plan_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('{"plan_version": 1, "experiments": [', encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: plan file is not valid JSON"):
        read_plan(path)
    path.write_text('{"plan_version": 1}', encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}: campaign_name: required key is missing"):
        read_plan(path)


def test_plan_or_reuse_writes_a_new_plan_then_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    first, report = plan_or_reuse(campaign(ABC), None, path)
    assert report.status == "new"
    written = path.read_bytes()
    again, report = plan_or_reuse(campaign(ABC), ["localhost"], path)
    assert report.status == "reused"
    assert report.lines() == [f"{path}: campaign and hosts unchanged, plan reused (9 experiments)"]
    assert again == first
    assert path.read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_changed_campaign_is_reported_and_the_old_plan_kept(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    old_plan, _ = plan_or_reuse(campaign(["a", "b", "c"]), ["h1", "h2"], path)
    old_text = path.read_text(encoding="utf-8")
    changed = parse_campaign(
        {
            "campaign_name": "demo",
            "configs": [config("a"), config("c", batch_size=4), config("d")],
            "execution": {"cycles": 3},
        },
        SOURCE,
    )
    plan, report = plan_or_reuse(changed, ["h1", "h2"], path)
    assert report.status == "updated"
    assert (report.added, report.removed, report.changed) == (["d"], ["b"], ["c"])
    assert report.archived_as == str(tmp_path / "plan.1.json")
    assert (tmp_path / "plan.1.json").read_text(encoding="utf-8") == old_text
    assert read_plan(path) == plan
    # configs that were planned before stay on their host; the new one goes round-robin
    assert plan.config_hosts() == {"a": "h1", "c": "h1", "d": "h1"}
    assert old_plan.config_hosts()["c"] == "h1"
    assert report.lines()[1:] == [
        "  configs added: d",
        "  configs removed: b",
        "  configs changed (config hash differs): c",
        f"  previous plan kept as {tmp_path / 'plan.1.json'}",
    ]


def test_changed_hosts_keep_configs_on_hosts_still_listed(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    plan_or_reuse(campaign(["a", "b", "c", "d"]), ["h1", "h2"], path)
    plan, report = plan_or_reuse(campaign(["a", "b", "c", "d"]), ["h2", "h3"], path)
    assert report.status == "updated"
    assert (report.added, report.removed, report.changed) == ([], [], [])
    assert "  hosts: h1, h2 -> h2, h3" in report.lines()
    # b and d were on h2 and stay; a and c lost h1 and go round-robin (index 0, 2 -> h2)
    assert plan.config_hosts() == {"a": "h2", "b": "h2", "c": "h2", "d": "h2"}


def test_changed_settings_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    plan_or_reuse(campaign(ABC, cycles=3), None, path)
    plan, report = plan_or_reuse(campaign(ABC, cycles=5), None, path)
    assert report.settings_changed == ["execution"]
    assert len(plan.experiments) == 15
    assert (tmp_path / "plan.1.json").exists()


def test_replan_builds_afresh_and_archives_each_previous_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    plan_or_reuse(campaign(ABC), ["h1"], path)
    plan_or_reuse(campaign(ABC), ["h1"], path, replan=True)
    plan, report = plan_or_reuse(campaign(ABC), ["h1"], path, replan=True)
    assert report.status == "replanned"
    assert report.archived_as == str(tmp_path / "plan.2.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.1.json", "plan.2.json", "plan.json"]
    assert plan == build_plan(campaign(ABC), ["h1"])


def test_an_unparsable_plan_file_is_left_alone_unless_replanning(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text("{truncated", encoding="utf-8")
    with pytest.raises(ConfigError, match=str(path)):
        plan_or_reuse(campaign(ABC), None, path)
    assert path.read_text(encoding="utf-8") == "{truncated"
    plan, report = plan_or_reuse(campaign(ABC), None, path, replan=True)
    assert report.status == "replanned"
    assert (tmp_path / "plan.1.json").read_text(encoding="utf-8") == "{truncated"
    assert read_plan(path) == plan


def test_dry_run_reports_what_would_happen_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    _, report = plan_or_reuse(campaign(ABC), None, path, dry_run=True)
    assert report.status == "new"
    assert report.lines() == [
        f"{path}: new plan written (9 experiments) [dry run: nothing written]"
    ]
    assert not path.exists()
    plan_or_reuse(campaign(ABC), None, path)
    written = path.read_bytes()
    plan, report = plan_or_reuse(campaign(["a", "b"]), None, path, dry_run=True)
    assert (report.status, report.removed, report.archived_as) == ("updated", ["c"], None)
    assert len(plan.experiments) == 6
    assert path.read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_plan_entry_whose_name_disagrees_with_its_config_is_refused(tmp_path: Path) -> None:
    data = json.loads(plan_json(build_plan(campaign(ABC))))
    data["experiments"][4]["config_name"] = "a"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"experiments\[4\]: .*demo__b__c02: config_name"):
        read_plan(path)


# --- one backend's experiments together in each cycle (the GPU hand-over) ----------------


def mixed_campaign(
    backends: list[str], cycles: int = 3, order: str = "interleaved"
) -> LoadedCampaign:
    """Configs n0, n1, ... with the given backends (bfloat16: every backend accepts it)."""
    configs = [
        {
            "config_name": f"n{i}",
            "backend": backend,
            "model": {"path": "/models/tiny"},
            "precision": "bfloat16",
        }
        for i, backend in enumerate(backends)
    ]
    data = {
        "campaign_name": "demo",
        "configs": configs,
        "execution": {"cycles": cycles, "order": order, "seed": 42},
    }
    return parse_campaign(data, SOURCE)


def backend_runs(experiments: list[Any]) -> list[tuple[int, str]]:
    """(cycle, backend) of each run of consecutive experiments sharing both."""
    runs: list[tuple[int, str]] = []
    for e in experiments:
        if not runs or runs[-1] != (e.cycle, e.backend):
            runs.append((e.cycle, e.backend))
    return runs


MIXED = ["pytorch", "vllm", "pytorch", "tensorrt", "vllm", "pytorch"]


def test_interleaved_runs_each_backend_together_in_config_order_each_cycle() -> None:
    plan = build_plan(mixed_campaign(["pytorch", "vllm", "pytorch", "vllm"], cycles=2))
    assert pairs(plan) == [
        ("n0", 1), ("n2", 1), ("n1", 1), ("n3", 1),
        ("n0", 2), ("n2", 2), ("n1", 2), ("n3", 2),
    ]  # fmt: skip


def test_grouped_runs_each_backend_together_over_the_whole_campaign() -> None:
    plan = build_plan(mixed_campaign(["pytorch", "vllm", "pytorch"], cycles=2, order="grouped"))
    assert pairs(plan) == [("n0", 1), ("n0", 2), ("n2", 1), ("n2", 2), ("n1", 1), ("n1", 2)]


@pytest.mark.parametrize("order", ["interleaved", "shuffled"])
def test_each_cycle_hands_the_gpu_over_once_per_backend(order: str) -> None:
    plan = build_plan(mixed_campaign(MIXED, cycles=4, order=order))
    runs = backend_runs(plan.experiments)
    assert len(runs) == 4 * 3  # per cycle: one run of each of the three backends
    for cycle in range(1, 5):
        assert sorted(b for c, b in runs if c == cycle) == ["pytorch", "tensorrt", "vllm"]
    assert sorted(pairs(plan)) == sorted((f"n{i}", c) for i in range(6) for c in range(1, 5))


def test_shuffled_keeps_the_shuffle_within_backend_blocks_and_of_their_order() -> None:
    backends = ["a", "b"] * 5
    plain = run_order(10, 6, "shuffled", 7)
    grouped = run_order(10, 6, "shuffled", 7, backends=backends)
    leaders = set()
    for cycle in range(1, 7):
        shuffled = [i for i, c in plain if c == cycle]
        leader = backends[shuffled[0]]  # the backend of the shuffle's first config goes first
        expected = [i for i in shuffled if backends[i] == leader]
        expected += [i for i in shuffled if backends[i] != leader]
        assert [i for i, c in grouped if c == cycle] == expected
        leaders.add(leader)
    assert leaders == {"a", "b"}  # which backend runs first changes between cycles


def test_the_backend_grouping_is_pinned() -> None:
    # the pinned shuffle above (cycle 1: 0 3 2 1, cycle 2: 1 0 3 2) with backends a b a b
    assert run_order(4, 2, "shuffled", 42, backends=["a", "b", "a", "b"]) == [
        (0, 1), (2, 1), (3, 1), (1, 1), (1, 2), (3, 2), (0, 2), (2, 2),
    ]  # fmt: skip


def test_a_mixed_campaign_gives_byte_identical_plans() -> None:
    assert plan_json(build_plan(mixed_campaign(MIXED, order="shuffled"))) == plan_json(
        build_plan(mixed_campaign(MIXED, order="shuffled"))
    )


# --- a vLLM version is an axis: one service per version -----------------------------------


def vllm_versions_campaign(order: str = "interleaved") -> LoadedCampaign:
    """`grid: {vary: {vllm.version: [0.11.1, 0.33.0], vllm.max_num_seqs: [8, 64]}}`."""
    data = {
        "campaign_name": "upgrade",
        "grid": {
            "base": {
                "config_name": "llama",
                "backend": "vllm",
                "model": {"path": "/models/tiny"},
                "precision": "bfloat16",
            },
            "vary": {"vllm.version": ["0.11.1", "0.33.0"], "vllm.max_num_seqs": [8, 64]},
        },
        "execution": {"cycles": 2, "order": order, "seed": 3},
    }
    return parse_campaign(data, SOURCE)


@pytest.mark.parametrize("order", ["interleaved", "shuffled", "grouped"])
def test_each_vllm_version_is_its_own_service_and_hands_the_gpu_over_once(order: str) -> None:
    plan = build_plan(vllm_versions_campaign(order))

    services = {e.config_name: e.service for e in plan.experiments}
    versions = {e.config_name: e.config.vllm.version for e in plan.experiments}  # type: ignore[union-attr]
    assert services == {
        name: "vllm" if version == "0.11.1" else "vllm-0.33.0" for name, version in versions.items()
    }
    assert sorted(set(services.values())) == ["vllm", "vllm-0.33.0"]
    runs: list[tuple[int, str]] = []
    for e in plan.experiments:  # one block per service, in each cycle or over the campaign
        key = (0 if order == "grouped" else e.cycle, e.service)
        if not runs or runs[-1] != key:
            runs.append(key)
    assert len(runs) == (2 if order == "grouped" else 4)


def test_a_plan_from_before_services_gets_them_and_a_wrong_one_is_refused(
    tmp_path: Path,
) -> None:
    data = json.loads(plan_json(build_plan(vllm_versions_campaign())))
    new = next(i for i, e in enumerate(data["experiments"]) if e["service"] == "vllm-0.33.0")
    for entry in data["experiments"]:
        del entry["service"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert read_plan(path).experiments[new].service == "vllm-0.33.0"

    data["experiments"][new]["service"] = "vllm"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"service 'vllm' differs from its config's 'vllm-0.33.0'"
    ):
        read_plan(path)


def test_backends_of_one_version_keep_their_plain_service_names() -> None:
    plan = build_plan(mixed_campaign(MIXED))
    assert {e.service for e in plan.experiments} == {"pytorch", "vllm", "tensorrt"}


def test_the_vllm_upgrade_example_runs_each_version_in_its_service() -> None:
    path = Path(__file__).resolve().parents[2] / "campaigns/examples/gpu-vllm-upgrade.yml"
    plan = build_plan(load_campaign(path))

    by_version = {(e.config.vllm.version, e.service) for e in plan.experiments}  # type: ignore[union-attr]
    assert by_version == {("0.11.1", "vllm"), ("0.33.0", "vllm-0.33.0")}
