"""Load campaign and experiment files; their validation errors worded by `config.messages`.

Every message names the file, the key path and the bad value, e.g.
``campaigns/x.yml: execution.cycles: 0 is less than the minimum 1``.

Files are hostile input: reading one is bounded in size, in YAML aliases (an alias bomb
is refused before any Python object is built), in nesting and in the length of numbers,
and every message quotes a bad value shortened. See docs/reliability.md ("Hostile files").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llenergymeasure.config.grid import expand_grid
from llenergymeasure.config.messages import (
    bounded_message,
    clip,
    format_loc,
    format_validation_error,
    shown,
)
from llenergymeasure.config.models import (
    CampaignConfig,
    ExperimentConfig,
    GridSpec,
    model_path_problem,
)
from llenergymeasure.errors import ConfigError

# Limits on a campaign or config file (docs/reliability.md, "Hostile files").
MAX_FILE_BYTES = 8 * 1024 * 1024  # a 2,000-config campaign is about 0.3 MB
# values once aliases are expanded: a 1 KB alias bomb makes 10^9, 2,000 configs 30,000
MAX_YAML_VALUES = 200_000
MAX_YAML_DEPTH = 50  # a campaign nests about 8 levels
MAX_NUMBER_CHARS = 100  # int() of 5,000 digits raises; 1:2:3... (base 60) is quadratic


@contextmanager
def _bounded_errors() -> Iterator[None]:
    """Every ConfigError raised inside comes out bounded (any value a validator quoted)."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(bounded_message(str(exc).splitlines())) from None


# libyaml's safe loader when PyYAML was built with it: same documents, ~10x faster on
# large campaigns (a 2,000-config file loads in a fraction of a second)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


def read_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_FILE_BYTES, in UTF-8."""
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file")
    try:
        with path.open("rb") as stream:  # read no more than the limit, whatever stat said
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; refused")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column}: not UTF-8 text "
            f"(byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None


def read_yaml(path: Path) -> Any:
    """The file's one YAML document; an alias bomb is refused before anything is built."""
    text = read_text(path)
    loader = _SAFE_LOADER(text)
    try:
        node = loader.get_single_node()  # the node graph: an alias is one shared node
        if node is None:
            return None
        _check_nodes(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc, text)}") from None
    except ValueError as exc:  # a value the constructor cannot make, e.g. date 2024-13-45
        raise ConfigError(f"{path}: a value cannot be read: {clip(str(exc), 200)}") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """`line L, column C: problem`, with a hint for a tab; never the offending text whole."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{context}: {problem}" if context else str(problem)
    if mark is None:
        return clip(" ".join(detail.split()), 200)
    lines = text.splitlines()
    line_text = lines[mark.line] if mark.line < len(lines) else ""
    if "\t" in line_text[: mark.column + 1]:
        detail += " (a tab: YAML indents with spaces only)"
    return f"line {mark.line + 1}, column {mark.column + 1}: {clip(detail, 200)}"


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_nodes(root: yaml.Node, path: Path) -> None:
    """Refuse a node graph whose expansion is too large, too deep or recursive.

    Each node's expanded size and height are computed once (aliases share nodes), so
    this takes time linear in the file, however much its aliases would expand.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height) once expanded
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            expanded = [sizes[id(child)] for child in _children(node)]
            values = 1 + sum(v for v, _ in expanded)
            height = 1 + max((h for _, h in expanded), default=0)
            if values > MAX_YAML_VALUES:
                raise ConfigError(
                    f"{path}: {_where(node)}: more than {MAX_YAML_VALUES} values once its "
                    "YAML aliases are expanded; refused (an alias bomb?)"
                )
            if height > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{path}: {_where(node)}: nested more than {MAX_YAML_DEPTH} levels deep"
                )
            sizes[key] = (values, height)
        elif key in sizes:
            continue
        elif key in open_nodes:
            raise ConfigError(f"{path}: {_where(node)}: a YAML alias refers to itself")
        elif isinstance(node, yaml.ScalarNode):
            _check_scalar(node, path)
            sizes[key] = (1, 1)
        else:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _check_scalar(node: yaml.ScalarNode, path: Path) -> None:
    if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
        raise ConfigError(
            f"{path}: {_where(node)}: a number of {len(node.value)} characters "
            f"({shown(node.value)}); at most {MAX_NUMBER_CHARS}"
        )


def _kind(data: Any) -> str:
    return "an empty file" if data is None else type(data).__name__


def parse_experiment(data: Any, source: str, prefix: tuple[Any, ...] = ()) -> ExperimentConfig:
    if not isinstance(data, dict):
        where = format_loc(prefix) + ": " if prefix else ""
        raise ConfigError(f"{source}: {where}expected a mapping, got {_kind(data)}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, prefix, ExperimentConfig)) from None


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ConfigError(f"{path}: cannot read JSON config: {clip(str(exc), 200)}") from None


def load_experiment(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    with _bounded_errors():
        data = read_json(path) if path.suffix == ".json" else read_yaml(path)
        return parse_experiment(data, str(path))


@dataclass(frozen=True)
class LoadedCampaign:
    """A validated campaign with every config resolved to an `ExperimentConfig`."""

    source: Path
    campaign: CampaignConfig
    configs: list[ExperimentConfig]


def parse_campaign(data: Any, source: Path) -> LoadedCampaign:
    if data is None:
        raise ConfigError(f"{source}: the file is empty; expected a campaign mapping")
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
    with _bounded_errors():
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
