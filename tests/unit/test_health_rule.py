"""The health rule between cycles: only GPU memory the service's worker does not hold counts.

A worker keeps its model resident on purpose, so `memory_outside_worker_pct` takes the
worker's own `gpu_memory_held_mib` off the memory used before the threshold applies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, installed
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.contracts.wire import SOCKET_ENV
from llenergymeasure.measure.health import health_report, memory_outside_worker_pct

GIB = 1 << 30


@pytest.mark.parametrize(
    ("used", "total", "held", "expected"),
    [
        (72 * 1024.0, 80 * 1024.0, 0.0, 90.0),  # no worker: all of it counts
        (72 * 1024.0, 80 * 1024.0, 70 * 1024.0, 2.5),  # the worker's model is left out
        (8 * 1024.0, 80 * 1024.0, 9 * 1024.0, 0.0),  # never negative
        (None, 80 * 1024.0, 0.0, None),  # unknown stays unknown
        (8 * 1024.0, 0.0, 0.0, None),
    ],
)
def test_memory_outside_worker_pct(
    used: float | None, total: float, held: float, expected: float | None
) -> None:
    assert memory_outside_worker_pct(used, total, held) == expected


@pytest.fixture(autouse=True)
def all_gpus_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)


def test_report_takes_each_gpus_worker_memory_off() -> None:
    busy = FakeGpu(memory_used=76 * GIB)
    with installed(FakeNvml([FakeGpu(memory_used=76 * GIB), busy])):
        report = health_report({1: 72 * 1024.0})

    first, second = report["gpus"]
    assert (first["memory_used_pct"], first["memory_outside_worker_pct"]) == (95.0, 95.0)
    assert first["memory_held_by_worker_mib"] == 0.0
    assert (second["memory_used_pct"], second["memory_outside_worker_pct"]) == (95.0, 5.0)
    assert second["memory_held_by_worker_mib"] == 72 * 1024.0


def test_health_command_without_a_worker_counts_all_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SOCKET_ENV, str(tmp_path / "no-worker.sock"))
    with installed(FakeNvml([FakeGpu(memory_used=40 * GIB)])):
        result = CliRunner().invoke(app, ["health", "--json"])

    assert result.exit_code == 0, result.output
    (gpu,) = json.loads(result.output)["gpus"]
    assert gpu["memory_outside_worker_pct"] == gpu["memory_used_pct"] == 50.0
