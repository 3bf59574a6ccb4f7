"""The Jinja2 filters of filter_plugins/lem.py, called as plain functions."""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from fixtures.load import load_module

from llenergymeasure.contracts.services import service_of
from llenergymeasure.controller.plan import host_share_of

FILTERS_FILE = Path(__file__).resolve().parents[2] / "filter_plugins" / "lem.py"


lem = load_module(FILTERS_FILE, "lem_filters_under_test")


def entry(
    position: int,
    config: str,
    cycle: int,
    host: str = "h1",
    backend: str = "pytorch",
    service: str | None = None,
):
    return {
        "position": position,
        "exp_id": f"demo__{config}__c{cycle:02d}",
        "config_name": config,
        "cycle": cycle,
        "backend": backend,
        "service": service or backend,
        "host": host,
    }


def vllm_entry(position: int, config: str, cycle: int, version: str) -> dict[str, Any]:
    """A vLLM entry as the plan writes it: its service is the version's."""
    planned = entry(position, config, cycle, backend="vllm")
    planned["config"] = {"backend": "vllm", "vllm": {"version": version}}
    planned["service"] = service_of(planned["config"])
    return planned


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["exp_id"] for e in entries]


def test_filter_module_exposes_every_filter() -> None:
    names = set(lem.FilterModule().filters())
    assert names == {"lem_host_share", "lem_with_gaps", "lem_services", "lem_cycle_segments"}


def test_host_share_keeps_only_the_host_in_position_order() -> None:
    plan = {
        "experiments": [
            entry(2, "b", 1, host="h1"),
            entry(0, "a", 1, host="h1"),
            entry(1, "a", 1, host="h2"),
            entry(3, "b", 2, host="h2"),
            entry(4, "a", 2, host="h1"),
        ]
    }
    share = lem.lem_host_share(plan, "h1")
    assert [e["position"] for e in share] == [0, 2, 4]
    assert all(e["host"] == "h1" for e in share)
    assert lem.lem_host_share(plan, "nobody") == []


def test_host_share_filter_and_package_share_one_rule() -> None:
    """The filter is an adapter over `host_share_of`: plan.json dicts give the same share."""
    entries = [entry(2, "b", 1), entry(0, "a", 1), entry(1, "c", 1, host="h2")]
    via_package = host_share_of(entries, "h1", itemgetter("host"), itemgetter("position"))
    assert lem.lem_host_share({"experiments": entries}, "h1") == via_package


def test_host_share_names_a_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lem, "LEM_IMPORT_ERROR", "the llenergymeasure package is not importable")
    with pytest.raises(AnsibleFilterError, match="lem_host_share: the llenergymeasure package"):
        lem.lem_host_share({"experiments": []}, "h1")


def test_host_share_returns_copies() -> None:
    plan = {"experiments": [entry(0, "a", 1)]}
    lem.lem_host_share(plan, "h1")[0]["host"] = "changed"
    assert plan["experiments"][0]["host"] == "h1"


def test_host_share_rejects_a_plan_without_experiments() -> None:
    with pytest.raises(AnsibleFilterError, match="no 'experiments' key"):
        lem.lem_host_share({"campaign_name": "demo"}, "h1")


def test_host_share_names_the_entry_missing_a_key() -> None:
    broken = entry(1, "a", 1)
    del broken["host"]
    with pytest.raises(AnsibleFilterError, match=r"entry \[1\] \(demo__a__c01\) has no key 'host'"):
        lem.lem_host_share({"experiments": [entry(0, "a", 1), broken]}, "h1")


def test_with_gaps_first_is_zero_cycle_change_gets_cycle_gap() -> None:
    pending = [entry(0, "a", 1), entry(1, "b", 1), entry(2, "a", 2), entry(3, "b", 2)]
    gaps = [e["gap_seconds"] for e in lem.lem_with_gaps(pending, 60, 300)]
    assert gaps == [0.0, 60.0, 300.0, 60.0]


def test_with_gaps_grouped_order_changes_cycle_every_step() -> None:
    pending = [entry(0, "a", 1), entry(1, "a", 2), entry(2, "b", 1)]
    gaps = [e["gap_seconds"] for e in lem.lem_with_gaps(pending, 5, 7)]
    assert gaps == [0.0, 7.0, 7.0]


def test_with_gaps_leaves_the_input_untouched_and_keeps_fields() -> None:
    pending = [entry(0, "a", 1, backend="vllm")]
    annotated = lem.lem_with_gaps(pending, 1, 2)
    assert "gap_seconds" not in pending[0]
    assert annotated[0]["backend"] == "vllm"
    assert annotated[0]["exp_id"] == "demo__a__c01"


def test_with_gaps_accepts_string_numbers_from_templating() -> None:
    annotated = lem.lem_with_gaps([entry(0, "a", 1), entry(1, "b", 1)], "1.5", "3")
    assert annotated[1]["gap_seconds"] == 1.5


def test_with_gaps_rejects_a_negative_gap() -> None:
    with pytest.raises(AnsibleFilterError, match=r"cycle_gap must be >= 0, got -1\.0"):
        lem.lem_with_gaps([entry(0, "a", 1)], 0, -1)


def test_with_gaps_on_nothing_pending_is_empty() -> None:
    assert lem.lem_with_gaps([], 10, 20) == []


VARIANTS = {"pytorch": "pytorch-cpu", "vllm": "vllm", "tensorrt": "tensorrt"}


def test_services_one_per_name_with_backend_and_image_build() -> None:
    experiments = [
        vllm_entry(0, "a", 1, "0.11.1"),
        vllm_entry(1, "b", 1, "0.33.0"),
        {**entry(2, "p", 1), "config": {"backend": "pytorch"}},
        vllm_entry(3, "a", 2, "0.11.1"),
    ]
    assert lem.lem_services(experiments, VARIANTS) == {
        "pytorch": {"backend": "pytorch", "build": ["--backend", "pytorch-cpu"]},
        "vllm": {"backend": "vllm", "build": ["--backend", "vllm"]},
        "vllm-0.33.0": {
            "backend": "vllm",
            "build": ["--backend", "vllm", "--engine-version", "0.33.0"],
        },
    }
    assert lem.lem_services([], VARIANTS) == {}


def test_services_rejects_a_string_instead_of_a_list() -> None:
    with pytest.raises(AnsibleFilterError, match="expected a list of plan entries, got str"):
        lem.lem_services("pytorch", VARIANTS)


def test_services_names_an_entry_that_is_not_a_mapping() -> None:
    with pytest.raises(AnsibleFilterError, match=r"entry \[0\] must be a mapping, got int"):
        lem.lem_services([3], VARIANTS)


def test_services_names_an_entry_without_a_service() -> None:
    old = {**entry(0, "a", 1), "config": {}}
    del old["service"]
    with pytest.raises(
        AnsibleFilterError, match=r"entry \[0\] \(demo__a__c01\) has no key 'service'"
    ):
        lem.lem_services([old], VARIANTS)


def test_services_names_a_backend_without_an_image_variant() -> None:
    with pytest.raises(AnsibleFilterError, match="no image variant for backend 'vllm'"):
        lem.lem_services([vllm_entry(0, "a", 1, "0.11.1")], {"pytorch": "pytorch-cpu"})


def test_cycle_segments_split_on_each_cycle_change() -> None:
    pending = [
        entry(0, "a", 1),
        entry(1, "b", 1),
        entry(2, "a", 2),
        entry(3, "b", 2),
        entry(4, "a", 3),
    ]
    segments = lem.lem_cycle_segments(pending)
    assert [(s["cycle"], s["service"]) for s in segments] == [
        (1, "pytorch"),
        (2, "pytorch"),
        (3, "pytorch"),
    ]
    assert [ids(s["experiments"]) for s in segments] == [
        ["demo__a__c01", "demo__b__c01"],
        ["demo__a__c02", "demo__b__c02"],
        ["demo__a__c03"],
    ]


def test_cycle_segments_grouped_order_gives_one_segment_per_run() -> None:
    pending = [entry(0, "a", 1), entry(1, "a", 2), entry(2, "b", 1), entry(3, "b", 2)]
    segments = lem.lem_cycle_segments(pending)
    assert [s["cycle"] for s in segments] == [1, 2, 1, 2]
    flattened = [e for s in segments for e in s["experiments"]]
    assert ids(flattened) == ids(pending)


def test_cycle_segments_of_nothing_is_empty() -> None:
    assert lem.lem_cycle_segments([]) == []


def test_cycle_segments_split_on_each_backend_change_within_a_cycle() -> None:
    pending = [
        entry(0, "p1", 1),
        entry(1, "p2", 1),
        entry(2, "v1", 1, backend="vllm"),
        entry(3, "v1", 2, backend="vllm"),
        entry(4, "p1", 2),
        entry(5, "t1", 2, backend="tensorrt"),
        entry(6, "p2", 2),  # an older plan may mix backends within a cycle
    ]
    segments = lem.lem_cycle_segments(pending)
    assert [(s["cycle"], s["service"], ids(s["experiments"])) for s in segments] == [
        (1, "pytorch", ["demo__p1__c01", "demo__p2__c01"]),
        (1, "vllm", ["demo__v1__c01"]),
        (2, "vllm", ["demo__v1__c02"]),
        (2, "pytorch", ["demo__p1__c02"]),
        (2, "tensorrt", ["demo__t1__c02"]),
        (2, "pytorch", ["demo__p2__c02"]),
    ]


def test_cycle_segments_split_on_each_gpu_setting_change() -> None:
    def knobbed(position: int, name: str, sm: int | None) -> dict[str, Any]:
        gpu = {"sm_clock_mhz": sm, "mem_clock_mhz": None, "power_limit_w": None}
        return {**entry(position, name, 1), "config": {"gpu": gpu}}

    pending = [knobbed(0, "a", 900), knobbed(1, "b", 900), knobbed(2, "c", None)]
    pending.append({**entry(3, "d", 1), "config": {}})  # a plan from before the knobs
    segments = lem.lem_cycle_segments(pending)
    assert [(s["gpu"], ids(s["experiments"])) for s in segments] == [
        (
            {"sm_clock_mhz": 900, "mem_clock_mhz": None, "power_limit_w": None},
            ["demo__a__c01", "demo__b__c01"],
        ),
        (None, ["demo__c__c01", "demo__d__c01"]),
    ]


def test_a_gpu_setting_change_waits_at_least_the_knob_settle() -> None:
    def knobbed(position: int, name: str, sm: int | None) -> dict[str, Any]:
        return {**entry(position, name, 1), "config": {"gpu": {"sm_clock_mhz": sm}}}

    pending = [knobbed(0, "a", 900), knobbed(1, "b", 900), knobbed(2, "c", None)]
    gaps = [e["gap_seconds"] for e in lem.lem_with_gaps(pending, 5, 300, 60)]
    assert gaps == [60.0, 5.0, 60.0]  # set at the start, kept, then restored


def test_cycle_segments_split_between_two_vllm_versions_like_two_backends() -> None:
    pending = [
        vllm_entry(0, "old", 1, "0.11.1"),
        vllm_entry(1, "old-bs8", 1, "0.11.1"),
        vllm_entry(2, "new", 1, "0.33.0"),
        vllm_entry(3, "new", 2, "0.33.0"),
        vllm_entry(4, "old", 2, "0.11.1"),
    ]
    segments = lem.lem_cycle_segments(pending)
    assert [(s["cycle"], s["service"], ids(s["experiments"])) for s in segments] == [
        (1, "vllm", ["demo__old__c01", "demo__old-bs8__c01"]),
        (1, "vllm-0.33.0", ["demo__new__c01"]),
        (2, "vllm-0.33.0", ["demo__new__c02"]),
        (2, "vllm", ["demo__old__c02"]),
    ]


def test_cycle_segments_name_an_entry_without_a_service() -> None:
    broken = entry(1, "b", 1)
    del broken["service"]
    with pytest.raises(
        AnsibleFilterError,
        match=r"lem_cycle_segments: entry \[1\] \(demo__b__c01\) has no key 'service'",
    ):
        lem.lem_cycle_segments([entry(0, "a", 1), broken])
