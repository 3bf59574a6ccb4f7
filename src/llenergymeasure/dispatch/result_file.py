"""Reading an experiment's stored `result.json` and checking that it is that experiment's."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from llenergymeasure.contracts.result import ExperimentResult
from llenergymeasure.errors import LemError


class UnusableResult(LemError):
    """The result file is missing, invalid, or another experiment's: the work is not done."""


def read_result(path: Path, exp_id: str, config_hash: str) -> ExperimentResult:
    """The validated result at `path`, which must be `exp_id`'s with `config_hash`."""
    try:
        result = ExperimentResult.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise UnusableResult(f"no result at {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise UnusableResult(f"{path}: not a valid result: {exc.errors()[0]['msg']}") from None
    found = (result.identity.exp_id, result.identity.config_hash)
    if found != (exp_id, config_hash):
        raise UnusableResult(
            f"{path}: result is for {found[0]!r} with hash {found[1]!r}, not "
            f"{exp_id!r} with hash {config_hash!r}"
        )
    return result
