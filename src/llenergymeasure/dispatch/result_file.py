"""Reading an experiment's stored `result.json` and checking that it is that experiment's.

Read as plain JSON: the container validated the result when it wrote it, and the host
side imports no pydantic (the controller validates it again when it aggregates).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llenergymeasure.errors import LemError


class UnusableResult(LemError):
    """The result file is missing, invalid, or another experiment's: the work is not done."""


def read_result(path: Path, exp_id: str, config_hash: str) -> dict[str, Any]:
    """The result at `path` as JSON, which must be `exp_id`'s with `config_hash`."""
    try:
        result = json.loads(path.read_bytes())
    except OSError as exc:
        raise UnusableResult(f"no result at {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnusableResult(f"{path}: not a valid result: Invalid JSON: {exc}") from None
    identity = result.get("identity") if isinstance(result, dict) else None
    if not isinstance(identity, dict):
        raise UnusableResult(f"{path}: not a valid result: no identity")
    found = (identity.get("exp_id"), identity.get("config_hash"))
    if found != (exp_id, config_hash):
        raise UnusableResult(
            f"{path}: result is for {found[0]!r} with hash {found[1]!r}, not "
            f"{exp_id!r} with hash {config_hash!r}"
        )
    return result
