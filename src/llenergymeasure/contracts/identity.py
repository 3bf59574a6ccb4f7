"""An experiment's identity, plain: its id, its config's hash, the names that become paths.

Standard library only: the controller computes these when it plans, and the host side
checks the plan's values against them without pydantic (tests/unit/test_host_side_imports.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
SAFE_NAME_MAX_LENGTH = 128


def safe_name_problem(value: object) -> str | None:
    """Why `value` cannot be a file or directory name: [A-Za-z0-9._-] only, never '..'."""
    if not isinstance(value, str) or not 1 <= len(value) <= SAFE_NAME_MAX_LENGTH:
        return f"{value!r} must be a string of 1 to {SAFE_NAME_MAX_LENGTH} characters"
    if not SAFE_NAME.fullmatch(value):
        return f"{value!r} may contain only letters, digits, '.', '_' and '-'"
    if ".." in value:
        return f"{value!r} must not contain '..'"
    return None


def exp_id(campaign_name: str, config_name: str, cycle: int) -> str:
    """Deterministic, path-safe id: both names are restricted to ``[A-Za-z0-9._-]``."""
    return f"{campaign_name}__{config_name}__c{cycle:02d}"


def digest(data: Any) -> str:
    """First 16 hex digits of SHA-256 over canonical JSON of `data`."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# Backend keys added after results were taken: left out of the hash while unset (None).
ADDED_LATER = {"pytorch": ("cb_num_blocks", "cb_block_size", "cb_max_batch_tokens")}


def hashed_config(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config (`ExperimentConfig` dumped as JSON) as it is hashed.

    Without `gpu` when no knob is set, and without the keys added later while they are
    unset (ADDED_LATER), so configs from before them keep their hash (and their
    finished results).
    """
    data = dict(resolved)
    gpu = data.get("gpu")
    if gpu is None or all(value is None for value in gpu.values()):
        data.pop("gpu", None)
    for section, keys in ADDED_LATER.items():
        if isinstance(data.get(section), Mapping):
            data[section] = {
                k: v for k, v in data[section].items() if not (k in keys and v is None)
            }
    return data


def config_hash_of(resolved: Mapping[str, Any]) -> str:
    """Hash of a resolved config as the plan holds it."""
    return digest(hashed_config(resolved))
