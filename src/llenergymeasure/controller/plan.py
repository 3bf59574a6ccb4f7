"""The plan: a campaign expanded into ordered experiments, one per (config, cycle).

Everything here is deterministic: the same campaign file gives the same ids,
hashes, order and host assignment on every run and every machine, so the plan
is byte-identical when built twice. See docs/architecture.md for the file format.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llenergymeasure.config.loader import LoadedCampaign
from llenergymeasure.config.messages import format_validation_error
from llenergymeasure.config.models import (
    Backend,
    ColdStartConfig,
    ExecutionConfig,
    ExperimentConfig,
    FailuresConfig,
    HealthCheckConfig,
    Order,
)
from llenergymeasure.contracts.identity import config_hash_of, digest, exp_id, hashed_config
from llenergymeasure.contracts.services import service_of
from llenergymeasure.errors import ConfigError, LemError
from llenergymeasure.files import atomic_write_text

PLAN_VERSION = 1
DEFAULT_HOSTS: tuple[str, ...] = ("localhost",)
E = TypeVar("E")  # a plan entry: `PlannedExperiment` here, a plan.json dict in the filter


class PlanModel(BaseModel):
    # A plan is written and read by this package only: anything unexpected is an error.
    model_config = ConfigDict(extra="forbid")


class PlannedExperiment(PlanModel):
    position: int = Field(ge=0, description="Index in the campaign-wide run order")
    exp_id: str
    config_name: str
    cycle: int = Field(ge=1)
    config_hash: str
    backend: Backend
    # Filled from the config when missing: a plan written before services had versions.
    service: str = Field(
        "", description="The compose service that runs it (contracts/services.py: service_of)"
    )
    host: str
    config: ExperimentConfig

    @model_validator(mode="after")
    def _agrees_with_config(self) -> PlannedExperiment:
        # a hand-edited plan must not pair one config's name with another's settings
        if (self.config_name, self.backend) != (self.config.config_name, self.config.backend):
            raise ValueError(
                f"{self.exp_id}: config_name/backend {self.config_name}/{self.backend} differ "
                f"from its config's {self.config.config_name}/{self.config.backend}"
            )
        service = service_of_config(self.config)
        if self.service and self.service != service:
            raise ValueError(
                f"{self.exp_id}: service {self.service!r} differs from its config's {service!r}"
            )
        self.service = service
        return self


class Plan(PlanModel):
    plan_version: Literal[1] = PLAN_VERSION
    campaign_name: str
    campaign_hash: str
    source: str
    order: Order
    seed: int
    cycles: int
    hosts: list[str]
    execution: ExecutionConfig
    health_check: HealthCheckConfig
    cold_start: ColdStartConfig
    failures: FailuresConfig
    experiments: list[PlannedExperiment]

    def config_hosts(self) -> dict[str, str]:
        """``{config_name: host}`` (all cycles of a config share a host)."""
        return {e.config_name: e.host for e in self.experiments}

    def config_hashes(self) -> dict[str, str]:
        return {e.config_name: e.config_hash for e in self.experiments}


def config_hash(config: ExperimentConfig) -> str:
    """Stable hash of the fully resolved config."""
    return config_hash_of(config.model_dump(mode="json"))


def campaign_hash(loaded: LoadedCampaign) -> str:
    """Hash of everything that shapes the plan's experiments: configs and campaign settings.

    The file path and the host list are not part of it (hosts are compared separately).
    """
    campaign = loaded.campaign
    return digest(
        {
            "campaign_name": campaign.campaign_name,
            "configs": [hashed_config(config.model_dump(mode="json")) for config in loaded.configs],
            **{
                section: getattr(campaign, section).model_dump(mode="json")
                for section in _SETTINGS_SECTIONS
            },
        }
    )


_SETTINGS_SECTIONS = ("execution", "health_check", "cold_start", "failures")


def run_order(
    n_configs: int,
    cycles: int,
    order: Order,
    seed: int,
    backends: Sequence[str] | None = None,
    knobs: Sequence[str] | None = None,
) -> list[tuple[int, int]]:
    """(config index, cycle) pairs in run order; every pair exactly once.

    grouped: all cycles of config 0, then config 1, ...
    interleaved: cycle 1 of every config, then cycle 2, ...
    shuffled: as interleaved, with each cycle's configs shuffled by an RNG seeded
    from (seed, cycle), so the order is the same on every machine and Python.

    `backends` (each config's service: its backend, and engine version where that is an
    axis) keeps one service's experiments together: within each cycle (the whole
    campaign for grouped), so that a GPU changes hands between services once per block
    (docs/worker.md, "GPU hand-over"). `knobs` (each config's GPU setting, as text)
    does the same within a service's block, so the host
    changes clocks or power limit, and settles after it, as seldom as it can (docs/knobs.md).
    """
    backends = backends if backends is not None else [""] * n_configs
    knobs = knobs if knobs is not None else [""] * n_configs
    groups = [(backend, knob) for backend, knob in zip(backends, knobs, strict=True)]
    if order == "grouped":
        indices = by_group(list(range(n_configs)), groups)
        return [(i, c) for i in indices for c in range(1, cycles + 1)]
    pairs = []
    for cycle in range(1, cycles + 1):
        indices = list(range(n_configs))
        if order == "shuffled":
            random.Random(f"{seed}:{cycle}").shuffle(indices)
        pairs.extend((i, cycle) for i in by_group(indices, groups))
    return pairs


def by_group(indices: list[int], groups: Sequence[tuple[str, ...]]) -> list[int]:
    """`indices` sorted by nested groups (a stable sort): each config's tuple, outer first.

    At every level a group comes in the order of its first config in `indices` (within
    its enclosing group), so a shuffle also shuffles which group runs first.
    """
    rank: dict[tuple[str, ...], int] = {}
    for index in indices:
        for depth in range(1, len(groups[index]) + 1):
            rank.setdefault(groups[index][:depth], len(rank))
    return sorted(
        indices,
        key=lambda index: [rank[groups[index][:d]] for d in range(1, len(groups[index]) + 1)],
    )


def service_of_config(config: ExperimentConfig) -> str:
    """The compose service that runs `config` (one rule, `contracts.services.service_of`)."""
    return service_of(config.model_dump(mode="json", include={"backend", config.backend}))


def knob_key(config: ExperimentConfig) -> str:
    """The config's GPU setting as text ('' when it leaves the GPU as it is)."""
    if config.gpu is None or not config.gpu.is_set():
        return ""
    return json.dumps(config.gpu.model_dump(mode="json"), sort_keys=True)


def check_hosts(hosts: list[str] | None) -> list[str]:
    """The host list to plan for: default localhost; names must be non-empty and distinct."""
    chosen = list(hosts) if hosts is not None else list(DEFAULT_HOSTS)
    if not chosen:
        raise ConfigError("hosts: at least one host is needed")
    for host in chosen:
        if not host or host != host.strip():
            raise ConfigError(f"hosts: {host!r} is not a host name")
    repeated = sorted({h for h in chosen if chosen.count(h) > 1})
    if repeated:
        raise ConfigError(f"hosts: {', '.join(repeated)} listed more than once")
    return chosen


def assign_hosts(
    config_names: list[str], hosts: list[str], keep: Mapping[str, str] | None = None
) -> list[str]:
    """Host of each config: round-robin by config index (config i -> hosts[i % n]).

    `keep` maps config names to a host they ran on before; it is kept when that host is
    still in `hosts`, so a re-plan does not move finished work to other hardware.
    """
    keep = keep or {}
    return [
        keep[name] if keep.get(name) in hosts else hosts[index % len(hosts)]
        for index, name in enumerate(config_names)
    ]


def build_plan(
    loaded: LoadedCampaign,
    hosts: list[str] | None = None,
    *,
    keep_hosts: Mapping[str, str] | None = None,
) -> Plan:
    """Expand `loaded` into its plan over `hosts` (default: localhost)."""
    hosts = check_hosts(hosts)
    campaign, configs = loaded.campaign, loaded.configs
    execution = campaign.execution
    config_hosts = assign_hosts([c.config_name for c in configs], hosts, keep_hosts)
    hashes = [config_hash(c) for c in configs]
    pairs = run_order(
        len(configs),
        execution.cycles,
        execution.order,
        execution.seed,
        backends=[service_of_config(c) for c in configs],
        knobs=[knob_key(c) for c in configs],
    )
    experiments = [
        PlannedExperiment(
            position=position,
            exp_id=exp_id(campaign.campaign_name, configs[index].config_name, cycle),
            config_name=configs[index].config_name,
            cycle=cycle,
            config_hash=hashes[index],
            backend=configs[index].backend,
            service=service_of_config(configs[index]),
            host=config_hosts[index],
            config=configs[index],
        )
        for position, (index, cycle) in enumerate(pairs)
    ]
    return Plan(
        campaign_name=campaign.campaign_name,
        campaign_hash=campaign_hash(loaded),
        source=str(loaded.source),
        order=execution.order,
        seed=execution.seed,
        cycles=execution.cycles,
        hosts=hosts,
        execution=execution,
        health_check=campaign.health_check,
        cold_start=campaign.cold_start,
        failures=campaign.failures,
        experiments=experiments,
    )


def host_share_of(
    experiments: Iterable[E],
    host: str,
    host_of: Callable[[E], str],
    position_of: Callable[[E], int],
) -> list[E]:
    """The experiments assigned to `host`, in plan order (by position).

    Generic over the entry's form, so the playbook's filter (plan.json dicts) and the
    package (`PlannedExperiment`) share one rule; a stable sort keeps ties in list order.
    """
    return sorted((e for e in experiments if host_of(e) == host), key=position_of)


def plan_json(plan: Plan) -> str:
    """The plan file's text: the same plan always gives the same bytes."""
    return plan.model_dump_json(indent=2) + "\n"


def write_plan(plan: Plan, path: str | Path) -> None:
    """Write atomically (temp file, fsync, ``os.replace``): a kill leaves old or new, whole."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, plan_json(plan))
    except OSError as exc:
        raise LemError(f"{path}: cannot write plan: {exc.strerror or exc}") from None


def read_plan(path: str | Path) -> Plan:
    """Read a plan file; ConfigError naming the file when it is missing or does not parse."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read plan: {exc.strerror}") from None
    try:
        return Plan.model_validate_json(text)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ConfigError(
                f"{path}: plan file is not valid JSON; remove it or re-plan"
            ) from None
        raise ConfigError(format_validation_error(str(path), exc, root=Plan)) from None


PlanStatus = Literal["new", "reused", "updated", "replanned"]


class PlanReport(BaseModel):
    """What `plan_or_reuse` did, and how the campaign differs from the previous plan."""

    path: str
    status: PlanStatus
    archived_as: str | None = None
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    settings_changed: list[str] = []
    hosts_before: list[str] | None = None
    hosts_after: list[str] = []
    experiments: int = 0
    dry_run: bool = False

    def lines(self) -> list[str]:
        """A human-readable account, one line per fact."""
        dry = " [dry run: nothing written]" if self.dry_run and self.status != "reused" else ""
        lines = [f"{self.path}: {_STATUS_TEXT[self.status]} ({self.experiments} experiments){dry}"]
        for label, names in (
            ("configs added", self.added),
            ("configs removed", self.removed),
            ("configs changed (config hash differs)", self.changed),
            ("settings changed", self.settings_changed),
        ):
            if names:
                lines.append(f"  {label}: {', '.join(names)}")
        if self.hosts_before is not None and self.hosts_before != self.hosts_after:
            before, after = ", ".join(self.hosts_before), ", ".join(self.hosts_after)
            lines.append(f"  hosts: {before} -> {after}")
        if self.archived_as:
            lines.append(f"  previous plan kept as {self.archived_as}")
        return lines


_STATUS_TEXT: dict[str, str] = {
    "new": "new plan written",
    "reused": "campaign and hosts unchanged, plan reused",
    "updated": "campaign or hosts changed, plan updated",
    "replanned": "re-planned on request",
}


def plan_or_reuse(
    loaded: LoadedCampaign,
    hosts: list[str] | None,
    path: str | Path,
    replan: bool = False,
    *,
    dry_run: bool = False,
) -> tuple[Plan, PlanReport]:
    """The campaign's plan at `path`: reused when nothing changed, otherwise rebuilt.

    A rebuilt plan keeps each remaining config on its previous host (while that host
    is still listed); the previous file is kept as ``plan.<n>.json``. With `replan`,
    the plan is built afresh even when nothing changed, and a previous file that no
    longer parses is set aside instead of stopping the run. With `dry_run` nothing is
    written or renamed (Ansible's check mode): the plan and report say what would be.
    """
    path = Path(path)
    hosts = check_hosts(hosts)
    previous = _previous_plan(path, tolerate_unreadable=replan)
    if previous is None and not path.exists():
        plan = build_plan(loaded, hosts)
        if not dry_run:
            write_plan(plan, path)
        report = PlanReport(
            path=str(path),
            status="new",
            hosts_after=hosts,
            experiments=len(plan.experiments),
            dry_run=dry_run,
        )
        return plan, report
    if (
        previous is not None
        and not replan
        and previous.campaign_hash == campaign_hash(loaded)
        and previous.hosts == hosts
    ):
        return previous, _report(path, "reused", previous, previous, None)
    keep = previous.config_hosts() if previous is not None and not replan else None
    plan = build_plan(loaded, hosts, keep_hosts=keep)
    archived = None
    if not dry_run:
        archived = archive_plan(path)
        write_plan(plan, path)
    report = _report(path, "replanned" if replan else "updated", previous, plan, archived)
    report.dry_run = dry_run
    return plan, report


def _previous_plan(path: Path, tolerate_unreadable: bool) -> Plan | None:
    if not path.exists():
        return None
    try:
        return read_plan(path)
    except ConfigError:
        if tolerate_unreadable:
            return None
        raise


def archive_plan(path: Path) -> Path:
    """Rename `path` (``plan.json``) to the first free ``plan.<n>.json`` beside it."""
    n = 1
    while (target := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
        n += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        raise LemError(
            f"{path}: cannot keep the previous plan as {target}: {exc.strerror}"
        ) from None
    return target


def _report(
    path: Path, status: PlanStatus, previous: Plan | None, plan: Plan, archived: Path | None
) -> PlanReport:
    report = PlanReport(
        path=str(path),
        status=status,
        archived_as=str(archived) if archived else None,
        hosts_after=plan.hosts,
        experiments=len(plan.experiments),
    )
    if previous is None:  # an unreadable plan set aside on request: nothing to compare
        return report
    before, after = previous.config_hashes(), plan.config_hashes()
    report.added = [name for name in after if name not in before]
    report.removed = [name for name in before if name not in after]
    report.changed = [name for name in after if name in before and before[name] != after[name]]
    report.settings_changed = [
        section
        for section in _SETTINGS_SECTIONS
        if getattr(previous, section) != getattr(plan, section)
    ]
    report.hosts_before = previous.hosts
    return report
