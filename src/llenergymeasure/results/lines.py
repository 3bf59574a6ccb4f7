"""The one progress line of a settled experiment, printed by the campaign callback and `lem run`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llenergymeasure.results.aggregate import format_value


def experiment_line(
    record: Mapping[str, Any], done: int, total: int | None, skipped: bool = False
) -> str:
    """`[12/60] cfg=tiny-bs1 cycle=2 host=localhost 41.2 J 1520 tok/s`.

    `record` holds what lem_experiment returns (or a lem_manifest item): config_name,
    cycle, host, status, metrics, error. `skipped`: completed before this run.
    """
    head = (
        f"[{done}/{total if total is not None else '?'}] cfg={record.get('config_name', '?')} "
        f"cycle={record.get('cycle', '?')} host={record.get('host', '?')}"
    )
    if record.get("status") == "failed":
        return f"{head} FAILED: {record.get('error') or record.get('msg')}"
    metrics = record.get("metrics") or {}
    energy = format_value(metrics.get("energy_j"))
    throughput = format_value(metrics.get("output_tokens_per_s"))
    return f"{head} {energy} J {throughput} tok/s" + (" (completed before)" if skipped else "")
