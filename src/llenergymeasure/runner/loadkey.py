"""The model load key: what a loaded model depends on.

Two configs with the same load key can be served by one loaded model (the worker of
issue 6 keeps it resident between experiments). The key covers the backend, the model
spec (path, revision, trust_remote_code), the precision, and the backend section's
load-time parameters. Backend parameters marked run-time in config/models.py
(`RUNTIME_PARAMETER`) are left out, as are decoder, dataset and measurement settings.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from llenergymeasure.config.models import RUNTIME_PARAMETER, ExperimentConfig

LOAD_KEY_LENGTH = 16


def is_runtime_parameter(section: type[BaseModel], name: str) -> bool:
    """True when `name` of a backend section only affects generation, not the load."""
    extra = section.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and all(extra.get(k) == v for k, v in RUNTIME_PARAMETER.items())


def load_time_parameters(section: BaseModel) -> dict[str, Any]:
    """The section's parameters that a model load depends on, as JSON values."""
    values = section.model_dump(mode="json")
    return {
        name: value
        for name, value in values.items()
        if not is_runtime_parameter(type(section), name)
    }


def load_spec(config: ExperimentConfig) -> dict[str, Any]:
    """Everything the load key hashes, readable (for logs and the worker's reports)."""
    return {
        "backend": config.backend,
        "model": config.model.model_dump(mode="json"),
        "precision": config.precision,
        "parameters": load_time_parameters(config.backend_section()),
    }


def load_key(config: ExperimentConfig) -> str:
    """First 16 hex digits of SHA-256 over the canonical JSON of `load_spec(config)`."""
    canonical = json.dumps(load_spec(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:LOAD_KEY_LENGTH]
