"""The headline metrics of a result: read from an `ExperimentResult` or its plain JSON.

Standard library only: the host side returns them from `result.json` read as plain
JSON (no pydantic there), the controller from the validated model; one table serves both.
"""

from __future__ import annotations

from typing import Any

# metric -> where it is in the result (None: derived below)
_PATHS: dict[str, tuple[str, ...] | None] = {
    "energy_j": ("energy", "total_energy_j"),
    "idle_adjusted_energy_j": ("energy", "idle_adjusted_energy_j"),
    "j_per_output_token": ("energy", "j_per_output_token"),
    "adjusted_j_per_output_token": ("energy", "adjusted_j_per_output_token"),
    "wh_per_1k_requests": None,
    "output_tokens_per_s": ("throughput", "output_tokens_per_s"),
    "requests_per_s": ("throughput", "requests_per_s"),
    "ttft_mean_s": ("ttft", "mean"),
    "latency_p50_s": ("latency", "p50"),
    "latency_p99_s": ("latency", "p99"),
    "load_seconds": ("timing", "load_seconds"),
}
HEADLINE_METRICS: tuple[str, ...] = tuple(_PATHS)


def _value(result: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if result is None:
            return None
        result = result.get(key) if isinstance(result, dict) else getattr(result, key)
    return result


def wh_per_1k_requests(result: Any) -> float | None:
    """Watt-hours per 1,000 requests (the AI Energy Score unit): J/request / 3.6."""
    energy = _value(result, ("energy", "total_energy_j"))
    requests = _value(result, ("tokens", "requests"))
    if energy is None or not requests:
        return None
    return energy / requests / 3.6


def headline_metrics(result: Any) -> dict[str, float | None]:
    """The numbers aggregated over cycles and returned by the Ansible module, from an
    `ExperimentResult` or the same result as plain JSON."""
    return {
        name: wh_per_1k_requests(result) if path is None else _value(result, path)
        for name, path in _PATHS.items()
    }
