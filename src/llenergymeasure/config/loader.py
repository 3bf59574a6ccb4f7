"""Load campaign and experiment files; turn validation errors into one-line messages.

Every message names the file, the key path and the bad value, e.g.
``campaigns/x.yml: execution.cycles: 0 is less than the minimum 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llenergymeasure.config.introspection import unknown_key_hint
from llenergymeasure.config.models import (
    CampaignConfig,
    ExperimentConfig,
    GridSpec,
    model_path_problem,
)
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


def _describe(error: dict[str, Any], root: type[BaseModel] | None = None) -> str:
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
        hint = unknown_key_hint(root, _clean_loc(error["loc"])) if root is not None else ""
        return f"unknown key (value {value!r})" + (f"; {hint}" if hint else "")
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg']} (got {value!r})"


def describe_validation_error(
    exc: ValidationError, prefix: tuple[Any, ...] = (), root: type[BaseModel] | None = None
) -> list[str]:
    """All errors of `exc` as `key.path: problem`, without repeats.

    `root` is the model that was validated: it lets an unknown key's message say
    which keys are accepted there.
    """
    lines = [
        f"{format_loc(tuple(prefix) + _clean_loc(error['loc']))}: {_describe(error, root)}"
        for error in exc.errors(include_url=False)
    ]
    return list(dict.fromkeys(lines))


def format_validation_error(
    source: str,
    exc: ValidationError,
    prefix: tuple[Any, ...] = (),
    root: type[BaseModel] | None = None,
) -> str:
    """All errors of `exc`, one per line, each `source: key.path: problem`."""
    return "\n".join(f"{source}: {line}" for line in describe_validation_error(exc, prefix, root))


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(part for part in loc if not _is_union_tag(part))


def _is_union_tag(part: Any) -> bool:
    # pydantic puts type names such as 'str' or 'dict[str,any]' into locs of unions
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


# libyaml's safe loader when PyYAML was built with it: same documents, ~10x faster on
# large campaigns (a 2,000-config file loads in a fraction of a second)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None


def parse_experiment(data: Any, source: str, prefix: tuple[Any, ...] = ()) -> ExperimentConfig:
    if not isinstance(data, dict):
        where = format_loc(prefix) + ": " if prefix else ""
        raise ConfigError(f"{source}: {where}expected a mapping, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, prefix, ExperimentConfig)) from None


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
        raise ConfigError(format_validation_error(str(source), exc, root=CampaignConfig)) from None
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
    roots = campaign.allowed_model_roots
    if campaign.grid is not None:
        return _configs_from_grid(campaign.grid, campaign.max_configs, source, roots)
    configs, errors = [], []
    for index, entry in enumerate(campaign.configs or []):
        try:
            configs.append(_config_entry(entry, index, source, roots))
        except ConfigError as exc:  # report every bad config at once, not only the first
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    return configs


def _config_entry(
    entry: dict[str, Any] | str, index: int, source: Path, roots: list[str]
) -> ExperimentConfig:
    """An inline config, or one given by a path relative to the campaign file."""
    if isinstance(entry, dict):
        return _with_model_path_checked(
            parse_experiment(entry, str(source), ("configs", index)),
            roots,
            f"{source}: configs[{index}].",
        )
    config_path = source.parent / entry
    if not config_path.is_file():
        raise ConfigError(f"{source}: configs[{index}]: config file {entry!r} not found")
    config = parse_experiment(read_yaml(config_path), str(config_path))
    return _with_model_path_checked(config, roots, f"{config_path}: ")


def _model_path_error(config: ExperimentConfig, roots: list[str], where: str) -> str | None:
    """`where` + `model.path: problem` when the config's model path is refused, else None.

    A campaign runs in the services, so its model paths must be where they mount models.
    Checked for campaigns only, not in ExperimentConfig: `lem experiment` run by hand
    still takes any local path.
    """
    problem = model_path_problem(config.model.path, roots)
    return None if problem is None else f"{where}model.path: {problem}"


def _with_model_path_checked(
    config: ExperimentConfig, roots: list[str], where: str
) -> ExperimentConfig:
    error = _model_path_error(config, roots, where)
    if error is not None:
        raise ConfigError(error)
    return config


def _configs_from_grid(
    grid: GridSpec, max_configs: int, source: Path, roots: list[str]
) -> list[ExperimentConfig]:
    """The grid's configs; in a campaign every combination must be valid (none is dropped)."""
    from llenergymeasure.config.grid import expand_grid

    expansion = expand_grid(
        grid.base,
        grid.vary,
        max_configs=max_configs,
        source=str(source),
        key_prefix="grid.",
    )
    if expansion.invalid:
        shown = expansion.invalid[:_MAX_GRID_ERRORS]
        lines = [
            f"{source}: grid: {' '.join(f'{k}={v}' for k, v in combo.items())}: {reason}"
            for combo, reason in shown
        ]
        if len(expansion.invalid) > len(shown):
            lines.append(f"{source}: grid: ... and {len(expansion.invalid) - len(shown)} more")
        raise ConfigError("\n".join(lines))
    varied = "vary" if {"model", "model.path"} & set(grid.vary) else "base"
    errors = [_model_path_error(c, roots, f"{source}: grid.{varied}.") for c in expansion.valid]
    if any(errors):
        raise ConfigError("\n".join(dict.fromkeys(e for e in errors if e is not None)))
    return expansion.valid


_MAX_GRID_ERRORS = 10
