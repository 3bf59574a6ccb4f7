"""The contract every backend implements.

A backend is loaded once per *load key* (what the load depends on) and can then
serve many measurement windows: the experiment runner today, and a long-lived
worker that keeps models loaded across experiments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llenergymeasure.config.models import ExperimentConfig


@dataclass
class RequestRecord:
    """One request's timings (seconds) and token counts; a timing the engine did not give
    is None (or an empty `itl_s`), never estimated."""

    input_tokens: int
    output_tokens: int
    latency_s: float | None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)


@dataclass
class BatchOutcome:
    """What one `generate` call returns: per-request records and backend warnings."""

    records: list[RequestRecord]
    warnings: list[str] = field(default_factory=list)


class LoadedBackend(Protocol):
    """A loaded model ready to generate."""

    device: str  # "cuda" or "cpu"
    # What a request's TTFT counts from (the result's `ttft.definition`, docs/results.md):
    # batch_start | frontend_arrival | llm_submit | executor_arrival.
    ttft_definition: str

    def generate(self, prompts: list[str], config: ExperimentConfig) -> BatchOutcome:
        """Run `prompts` with the config's decoder and batching; return per-request records."""
        ...

    def synchronize(self) -> None:
        """Wait until the device is idle (window edges)."""
        ...

    def unload(self) -> None:
        """Release the model and the device memory it holds."""
        ...

    def versions(self) -> dict[str, Any]:
        """Engine library versions, for the result's environment."""
        ...
