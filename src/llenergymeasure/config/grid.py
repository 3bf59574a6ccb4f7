"""Expand a base experiment config and a set of varied keys into configs.

``vary`` maps dotted keys (``pytorch.batch_size``, ``decoder.temperature``,
``backend``) to lists of values. A backend-specific key applies only to the
combinations of its own backend, so varying ``backend`` together with
``pytorch.batch_size`` and ``vllm.max_num_seqs`` gives each backend only its own
parameters, and no combination twice. A backend-specific key for a backend the
grid never uses makes every combination invalid, with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llenergymeasure.config.introspection import (
    backend_of,
    is_known_key,
    unknown_key_hint,
    unknown_keys,
)
from llenergymeasure.config.messages import describe_validation_error, format_loc
from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.errors import ConfigError

DEFAULT_MAX_CONFIGS = 1000
NAME_MAX_LENGTH = 128  # the limit of SafeName in config.models
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_DOT_RUN = re.compile(r"\.{2,}")

Combo = dict[str, Any]


@dataclass(frozen=True)
class GridExpansion:
    """The configs of a grid that validated, and the combinations that did not.

    Each invalid combination is the varied values it was made of, always including
    ``backend``, with the reason it was rejected.
    """

    valid: list[ExperimentConfig]
    invalid: list[tuple[Combo, str]]

    def counts_by_backend(self) -> dict[str, tuple[int, int]]:
        """``{backend: (valid, invalid)}``, backends sorted by name."""
        valid = Counter(config.backend for config in self.valid)
        invalid = Counter(str(combo.get("backend")) for combo, _ in self.invalid)
        return {b: (valid[b], invalid[b]) for b in sorted(set(valid) | set(invalid))}


def expand_grid(
    base: dict[str, Any],
    vary: dict[str, list[Any]],
    max_configs: int = DEFAULT_MAX_CONFIGS,
    *,
    source: str = "grid",
    key_prefix: str = "",
) -> GridExpansion:
    """Every combination of `vary` applied to `base`, validated as `ExperimentConfig`.

    Raises ConfigError, before building anything, when a varied key is unknown or
    its values are not a non-empty list of distinct values, or when the grid has
    more than `max_configs` combinations. `source` and `key_prefix` locate errors,
    e.g. ``campaigns/x.yml`` and ``grid.``.
    """
    if not isinstance(base, dict):
        raise ConfigError(
            f"{source}: {key_prefix}base: expected a mapping, got {type(base).__name__}"
        )
    _check_base_keys(base, source, key_prefix)
    _check_vary(vary, source, key_prefix)
    backends = list(vary.get("backend", [base.get("backend")]))
    total = count_combinations(vary, backends)
    if total > max_configs:
        raise ConfigError(
            f"{source}: {key_prefix}vary: {total} combinations, more than max_configs="
            f"{max_configs}; vary fewer values or raise the limit (--max-configs / max_configs)"
        )
    valid: list[ExperimentConfig] = []
    invalid: list[tuple[Combo, str]] = []
    for combo in _combinations(vary, backends):
        outcome = _materialise(base, vary, combo, backends)
        if isinstance(outcome, ExperimentConfig):
            valid.append(outcome)
        else:
            invalid.append((combo, outcome))
    return GridExpansion(valid=_with_unique_names(valid), invalid=invalid)


def count_combinations(vary: dict[str, list[Any]], backends: list[Any]) -> int:
    """How many combinations `expand_grid` builds, computed without building them."""
    return sum(
        math.prod(len(vary[key]) for key in _keys_for(vary, backend, backends))
        for backend in backends
    )


def _keys_for(vary: dict[str, list[Any]], backend: Any, backends: list[Any]) -> list[str]:
    """The varied keys (other than `backend`) that combinations of `backend` carry.

    A key of another backend the grid covers is left out; a key of a backend the grid
    never uses is kept, so that its combinations are reported invalid.
    """
    return [
        key
        for key in vary
        if key != "backend" and (backend_of(key) in (None, backend) or _foreign(key, backends))
    ]


def _foreign(key: str, backends: list[Any]) -> bool:
    owner = backend_of(key)
    return owner is not None and owner not in backends


def _combinations(vary: dict[str, list[Any]], backends: list[Any]) -> Iterator[Combo]:
    for backend in backends:
        keys = _keys_for(vary, backend, backends)
        for values in itertools.product(*(vary[key] for key in keys)):
            yield {"backend": backend, **dict(zip(keys, values, strict=True))}


def _materialise(
    base: dict[str, Any], vary: dict[str, list[Any]], combo: Combo, backends: list[Any]
) -> ExperimentConfig | str:
    """The validated config of one combination, or the reason it is invalid."""
    backend = combo["backend"]
    for key in combo:
        if _foreign(key, backends):
            return f"{key} does not apply to backend={backend}"
    data = copy.deepcopy(base)
    for other in backends:
        # base sections of the grid's other backends apply to their own combos only
        if other != backend and isinstance(other, str):
            data.pop(other, None)
    for key, value in combo.items():
        set_dotted(data, key, copy.deepcopy(value))
    data["config_name"] = _config_name(base, vary, combo)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        return "; ".join(describe_validation_error(exc, root=ExperimentConfig))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for key ``"a.b"``, creating mappings on the way."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def _check_base_keys(base: dict[str, Any], source: str, key_prefix: str) -> None:
    """Unknown keys of the base, named once each rather than once per combination."""
    errors = [
        f"{source}: {key_prefix}base.{format_loc(loc)}: unknown key (value {value!r}); "
        + unknown_key_hint(ExperimentConfig, loc)
        for loc, value in unknown_keys(ExperimentConfig, base)
    ]
    if errors:
        raise ConfigError("\n".join(errors))


def _check_vary(vary: Any, source: str, key_prefix: str) -> None:
    where = f"{source}: {key_prefix}vary"
    if not isinstance(vary, dict) or not vary:
        raise ConfigError(f"{where}: expected a non-empty mapping of key to list of values")
    for key, values in vary.items():
        if key == "config_name":
            raise ConfigError(f"{where}.config_name: cannot be varied; names are generated")
        if not is_known_key(key):
            hint = unknown_key_hint(ExperimentConfig, key.split("."))
            raise ConfigError(f"{where}.{key}: unknown key" + (f"; {hint}" if hint else ""))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
        seen = [_canonical(v) for v in values]
        counts = Counter(seen)  # linear: a hostile list of a million values stays cheap
        repeated = [v for v, text in zip(values, seen, strict=True) if counts[text] > 1]
        if repeated:
            raise ConfigError(f"{where}.{key}: value {repeated[0]!r} is listed more than once")


def _canonical(value: Any) -> str:
    # bool and int compare equal in Python (True == 1); JSON keeps them apart
    return json.dumps(value, sort_keys=True, default=str)


def _config_name(base: dict[str, Any], vary: dict[str, list[Any]], combo: Combo) -> str:
    """Base name plus the values that tell this combination apart, path-safe.

    e.g. ``llama--vllm--max_num_seqs-64``: a key with a single value adds nothing.
    """
    parts = [str(base.get("config_name") or "grid")]
    for key, value in combo.items():
        if len(vary.get(key, ())) < 2:
            continue
        shown = _value_text(value)
        parts.append(shown if key == "backend" else f"{key.rsplit('.', 1)[-1]}-{shown}")
    name = _DOT_RUN.sub(".", _UNSAFE_RUN.sub("-", "--".join(parts)))
    if len(name) > NAME_MAX_LENGTH:
        name = _hashed(name, _canonical(combo))
    return name


def _hashed(name: str, content: str) -> str:
    """`name` cut to fit with a short hash of `content`, which tells it apart."""
    digest = hashlib.sha256(content.encode()).hexdigest()[:8]
    return f"{name[: NAME_MAX_LENGTH - len(digest) - 1]}-{digest}"


def _value_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _with_unique_names(configs: list[ExperimentConfig]) -> list[ExperimentConfig]:
    """Add a short content hash to names that collide once made path-safe ('a/b', 'a-b')."""
    counts = Counter(config.config_name for config in configs)
    return [
        config.model_copy(
            update={"config_name": _hashed(config.config_name, config.model_dump_json())}
        )
        if counts[config.config_name] > 1
        else config
        for config in configs
    ]
