"""A server-mode result's figures from synthetic request records (runner/serving.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llenergymeasure.config.models import LoadConfig
from llenergymeasure.measure.steady import ServedRequest, steady_window
from llenergymeasure.measure.window import Sample, WindowReadings
from llenergymeasure.runner.serve_run import window_energy
from llenergymeasure.runner.serving import itl_s, serving_block, write_requests

LOAD = LoadConfig(
    mode="server",
    request_rate=1.0,
    num_requests=30,
    warmup_requests=5,
    slo={"ttft_ms": 200, "itl_ms": 50},
    min_window_seconds=10.0,
)


def trace() -> list[ServedRequest]:
    """1 request/s, 11 tokens each over 0.5 s (ITL 50 ms); every third one has a slow first
    token (300 ms, over the 200 ms deadline); one fails."""
    requests = []
    for i in range(30):
        ttft = 0.3 if i % 3 == 0 else 0.1
        requests.append(ServedRequest(float(i), i + ttft, i + ttft + 0.5, 7, 11))
    requests[20] = ServedRequest(20.0, None, 20.2, 7, 0, error="HTTP 500")
    return requests


def test_figures_over_the_window() -> None:
    requests = trace()
    window = steady_window(requests, "rate", warmup_requests=5, min_window_seconds=10.0)
    serving = serving_block(
        requests, window, LOAD, energy_j=480.0, server="transformers serve", load_generator="g"
    )
    # window [5 s, 29 s]: requests 5..28 end inside, less the failed one
    assert serving.window.requests_completed == 23
    assert serving.requests_sent == 30 and serving.requests_failed == 1
    assert serving.achieved_request_rate == pytest.approx(23 / 24)
    assert serving.j_per_request == pytest.approx(480.0 / 23)
    assert serving.wh_per_1k_requests == pytest.approx(480.0 / 23 * 1000 / 3600)
    assert serving.j_per_output_token == pytest.approx(
        480.0 / serving.window.output_tokens, rel=0.05
    )
    assert serving.itl.p50 == pytest.approx(0.05)
    assert serving.ttft.p50 == pytest.approx(0.1)
    slow = sum(1 for i in range(5, 29) if i % 3 == 0 and i != 20)
    assert serving.slo_attainment_pct == pytest.approx(100.0 * (23 - slow) / 23)
    assert serving.goodput_rps == pytest.approx((23 - slow) / 24)
    assert serving.window.stable


def test_no_energy_meter_gives_null_energy_figures_and_no_slo_no_attainment() -> None:
    requests = trace()
    window = steady_window(requests, "rate", warmup_requests=5)
    load = LOAD.model_copy(update={"slo": None})
    serving = serving_block(requests, window, load, energy_j=None, server="s", load_generator="g")
    assert serving.energy_j is None and serving.j_per_output_token is None
    assert serving.wh_per_1k_requests is None
    assert serving.slo_attainment_pct is None and serving.goodput_rps is None
    # the figures that need no meter are there
    assert serving.window.seconds == pytest.approx(24.0) and serving.output_tokens_per_s > 0


def test_itl_needs_two_tokens() -> None:
    assert itl_s(ServedRequest(0.0, 0.1, 0.1, output_tokens=1)) is None
    assert itl_s(ServedRequest(0.0, 0.1, 1.1, output_tokens=11)) == pytest.approx(0.1)


def test_requests_file_has_every_record(tmp_path: Path) -> None:
    path = write_requests(tmp_path, trace())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 30 and lines[20]["error"] == "HTTP 500"
    assert set(lines[0]) == {
        "arrival_s",
        "first_token_s",
        "end_s",
        "input_tokens",
        "output_tokens",
        "error",
    }


def cpu_readings(joules_per_s: float, seconds: int, gap_at: int | None = None) -> WindowReadings:
    """A CPU host's meter: RAPL's total read every second, none at `gap_at`."""
    samples = [
        Sample(
            t_s=float(t),
            power_w=[],
            temperature_c=[],
            cpu_energy_j=None if t == gap_at else joules_per_s * t,
        )
        for t in range(seconds + 1)
    ]
    return WindowReadings(
        source="rapl",
        duration_s=float(seconds),
        sample_interval_ms=1000,
        gpu_indices=[],
        gpu_energy_j_per_gpu=None,
        cpu_energy_j=joules_per_s * seconds,
        samples=samples,
    )


def test_a_cpu_window_takes_rapls_total_between_its_own_edges() -> None:
    joules, source = window_energy(cpu_readings(10.0, 10), 2.5, 7.0)
    assert source == "rapl" and joules == pytest.approx(45.0)  # 10 W over 4.5 s


def test_a_rapl_gap_or_an_edge_outside_the_samples_gives_no_window_energy() -> None:
    assert window_energy(cpu_readings(10.0, 10, gap_at=5), 2.5, 7.0) == (None, "none")
    assert window_energy(cpu_readings(10.0, 10), 2.5, 11.0) == (None, "none")


def gpu_readings(watts: float, counter_watts: float, gap_at: int | None = None) -> WindowReadings:
    """Two GPUs sampled every second for 10 s: the power trace at `watts`, and NVML's energy
    counters (mJ since driver load, so not from 0) rising at `counter_watts`; at `gap_at`
    the second GPU's counter is not read."""
    samples = [
        Sample(
            t_s=float(t),
            power_w=[watts, watts],
            temperature_c=[None, None],
            gpu_energy_mj=[
                7_000_000 + int(1000 * counter_watts * t),
                None if t == gap_at else 9_000_000 + int(1000 * counter_watts * t),
            ],
        )
        for t in range(11)
    ]
    return WindowReadings(
        source="nvml",
        duration_s=10.0,
        sample_interval_ms=1000,
        gpu_indices=[0, 1],
        gpu_energy_j_per_gpu=[10 * counter_watts] * 2,
        cpu_energy_j=None,
        samples=samples,
    )


def test_a_gpu_window_takes_the_energy_counters_between_its_own_edges() -> None:
    # the counters (120 W) win over the power trace (100 W): 2 GPUs x 120 W x 4.5 s
    joules, source = window_energy(gpu_readings(100.0, 120.0), 2.5, 7.0)
    assert source == "nvml" and joules == pytest.approx(1080.0)


def test_a_gpu_counter_gap_falls_back_to_the_power_trace() -> None:
    joules, source = window_energy(gpu_readings(100.0, 120.0, gap_at=4), 2.5, 7.0)
    assert source == "nvml_power" and joules == pytest.approx(900.0)
