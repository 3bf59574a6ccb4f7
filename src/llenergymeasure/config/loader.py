"""Load campaign and experiment files; turn validation errors into one-line messages.

Every message names the file, the key path and the bad value, e.g.
``campaigns/x.yml: execution.cycles: 0 is less than the minimum 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llenergymeasure.config.models import CampaignConfig, ExperimentConfig
from llenergymeasure.errors import ConfigError


def format_loc(loc: tuple[Any, ...]) -> str:
    """('configs', 0, 'pytorch', 'batch_size') -> 'configs[0].pytorch.batch_size'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "greater_than_equal":
        return f"{value!r} is less than the minimum {ctx['ge']}"
    if kind == "greater_than":
        return f"{value!r} must be greater than {ctx['gt']}"
    if kind == "less_than_equal":
        return f"{value!r} is more than the maximum {ctx['le']}"
    if kind == "less_than":
        return f"{value!r} must be less than {ctx['lt']}"
    if kind == "extra_forbidden":
        return f"unknown key (value {value!r})"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg']} (got {value!r})"


def format_validation_error(source: str, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> str:
    """All errors of `exc`, one per line, each `source: key.path: problem`."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(prefix) + tuple(p for p in error["loc"] if not _is_union_tag(p))
        lines.append(f"{source}: {format_loc(loc)}: {_describe(error)}")
    return "\n".join(dict.fromkeys(lines))


def _is_union_tag(part: Any) -> bool:
    # pydantic puts type names such as 'str' or 'dict[str,any]' into locs of unions
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None


def parse_experiment(data: Any, source: str, prefix: tuple[Any, ...] = ()) -> ExperimentConfig:
    if not isinstance(data, dict):
        where = format_loc(prefix) + ": " if prefix else ""
        raise ConfigError(f"{source}: {where}expected a mapping, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, prefix)) from None


def load_experiment(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    if path.suffix == ".json":
        import json

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read JSON config: {exc}") from None
    else:
        data = read_yaml(path)
    return parse_experiment(data, str(path))


@dataclass(frozen=True)
class LoadedCampaign:
    """A validated campaign with every config resolved to an `ExperimentConfig`."""

    source: Path
    campaign: CampaignConfig
    configs: list[ExperimentConfig]


def parse_campaign(data: Any, source: Path) -> LoadedCampaign:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        campaign = CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(source), exc)) from None
    configs = _resolve_configs(campaign, source)
    if campaign.execution.warmup_prompts is not None:
        configs = [
            c.model_copy(
                update={
                    "measurement": c.measurement.model_copy(
                        update={"warmup_prompts": campaign.execution.warmup_prompts}
                    )
                }
            )
            for c in configs
        ]
    names = [c.config_name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: configs: duplicate config_name {', '.join(duplicates)}")
    return LoadedCampaign(source=source, campaign=campaign, configs=configs)


def load_campaign(path: str | Path) -> LoadedCampaign:
    path = Path(path)
    return parse_campaign(read_yaml(path), path)


def _resolve_configs(campaign: CampaignConfig, source: Path) -> list[ExperimentConfig]:
    if campaign.grid is not None:
        from llenergymeasure.config.grid import expand_grid

        expansion = expand_grid(
            campaign.grid.base, campaign.grid.vary, max_configs=campaign.max_configs
        )
        if not expansion.valid:
            reasons = "; ".join(r for _, r in expansion.invalid[:5])
            raise ConfigError(f"{source}: grid: no valid combination ({reasons})")
        return expansion.valid
    configs = []
    for index, entry in enumerate(campaign.configs or []):
        prefix = ("configs", index)
        if isinstance(entry, str):
            config_path = (source.parent / entry).resolve()
            if not config_path.is_file():
                raise ConfigError(f"{source}: configs[{index}]: config file {entry!r} not found")
            configs.append(parse_experiment(read_yaml(config_path), str(config_path)))
        else:
            configs.append(parse_experiment(entry, str(source), prefix))
    return configs
