"""Server mode end to end (issue 19): a real `campaign.yml` run on localhost whose configs
start `transformers serve --continuous-batching` in the CPU image's service, load it with
GuideLLM at two request rates (a grid over `load.request_rate`) for 3 cycles, and
aggregate the steady windows into summary.json with their intervals.

One module-scoped run, read by every test here; the session's prepared venv and models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.campaign import (
    CampaignRun,
    HostDirs,
    compose_down,
    manifest_entries,
    read_json,
    run_campaign,
    write_yaml,
)
from fixtures.faults import PreparedHost, campaign_vars, local_inventory, state_dir
from python_on_whales import DockerClient

from llenergymeasure.contracts.result import SERVING_METRICS
from llenergymeasure.runner.loadgen import SPARE_ROWS

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CAMPAIGN = "served"
RATES = (4, 8)
CYCLES = 3
REQUESTS = 16  # at 8/s, a window of about 1.4 s after the warm-up requests
WARMUP = 4  # GuideLLM sends a replayed trace's first 3-4 rows at once
CONFIGS = {f"serve--request_rate-{rate}": rate for rate in RATES}
# No GPU and no RAPL here: nothing meters the window's energy (docs/server-mode.md).
ENERGY_METRICS = {
    "serving_j_per_output_token",
    "serving_j_per_request",
    "serving_wh_per_1k_requests",
}


def server_campaign() -> dict[str, Any]:
    base = {
        "config_name": "serve",
        "backend": "pytorch",
        "model": {"path": "/models/tiny"},
        "decoder": {"max_new_tokens": 8},
        # the paged cache's GPU-sized default is too large for a CPU
        "pytorch": {"cb_num_blocks": 64, "cb_block_size": 16},
        "load": {
            "mode": "server",
            "request_rate": RATES[0],
            "num_requests": REQUESTS,
            "warmup_requests": WARMUP,
            "min_window_seconds": 0.5,
            "slo": {"ttft_ms": 2000, "itl_ms": 500},
        },
    }
    return {
        "campaign_name": CAMPAIGN,
        "grid": {"base": base, "vary": {"load.request_rate": list(RATES)}},
        "execution": {"cycles": CYCLES},
    }


@dataclass(frozen=True)
class ServedCampaign:
    host: HostDirs
    run: CampaignRun
    results: Path  # the controller's results/<campaign>

    def result_files(self) -> list[Path]:
        return sorted((state_dir(self.host, CAMPAIGN) / "results").glob("*/result.json"))


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    prepared_host: PreparedHost,
    cpu_image: str,
    docker_engine: DockerClient,
) -> Iterator[ServedCampaign]:
    root = tmp_path_factory.mktemp("served")
    host = prepared_host.dirs(root / "host", "lem-served")
    variables = campaign_vars(
        write_yaml(root / "campaign.yml", server_campaign()), root / "results", host
    )
    try:
        run = run_campaign(local_inventory(root / "inventory.yml"), variables, root)
        yield ServedCampaign(host, run, root / "results" / CAMPAIGN)
    finally:
        compose_down(host.project)


def test_every_rate_and_cycle_completes_with_its_requests_recorded(served: ServedCampaign) -> None:
    assert served.run.returncode == 0, served.run.output[-6000:]
    entries = manifest_entries(served.host.manifest(CAMPAIGN))
    assert len(entries) == len(RATES) * CYCLES
    assert {entry["status"] for entry in entries.values()} == {"completed"}
    for path in served.result_files():
        result = read_json(path)
        serving = result["serving"]
        assert serving["server"] == "transformers serve"
        assert serving["load_generator"].startswith("guidellm 0.8.1")
        # GuideLLM 0.8.1's replay now and then leaves a trace's last row unsent: the
        # trace's spare row takes that, and every asked request is sent and kept
        sent = serving["requests_sent"]
        assert sent == REQUESTS and serving["requests_failed"] == 0
        assert not any("the load generator sent" in w for w in result["warnings"])
        assert serving["window"]["requests_completed"] > 0 and serving["window"]["stable"]
        records = (path.parent / "requests.jsonl").read_text().splitlines()
        assert len(records) == sent
        for record in map(json.loads, records):
            assert record["error"] is None
            assert record["arrival_s"] <= record["first_token_s"] <= record["end_s"]
            assert record["output_tokens"] > 0


def sent_at_trace_times(sent: list[float], trace: tuple[float, ...]) -> bool:
    """Whether every send after the warm-up ones is within 0.25 s of a trace time, once
    shifted by the generator's start (the last send kept is the last asked row's). Under
    load GuideLLM may send a trace's first rows late, at once (docs/server-mode.md): the
    warm-up requests, outside the window."""
    start = sent[-1] - trace[REQUESTS - 1]
    return all(min(abs(at - start - t) for t in trace) < 0.25 for at in sent[WARMUP:])


def test_requests_arrive_at_the_seeded_trace_times(served: ServedCampaign) -> None:
    """Every cycle of a config replays the same seeded arrivals (arrivals.jsonl beside the
    result), of mean gap 1 / rate, and each request was sent at its trace time."""
    traces: dict[float, set[tuple[float, ...]]] = {}
    for path in served.result_files():
        rate = read_json(path)["config"]["load"]["request_rate"]
        lines = (path.parent / "arrivals.jsonl").read_text().splitlines()
        trace = tuple(json.loads(line)["timestamp"] for line in lines)
        traces.setdefault(rate, set()).add(trace)
        assert len(trace) == REQUESTS + SPARE_ROWS
        assert (trace[-1] - trace[0]) / (len(trace) - 1) == pytest.approx(1 / rate, rel=0.6)
        sent = sorted(
            json.loads(line)["arrival_s"] for line in (path.parent / "requests.jsonl").open()
        )
        assert sent_at_trace_times(sent, trace), (path, sent, trace)
    assert {rate: len(seen) for rate, seen in traces.items()} == {float(r): 1 for r in RATES}


def test_one_server_serves_both_rates(served: ServedCampaign) -> None:
    """The rates share a load key: the first experiment starts the server, the rest reuse it."""
    timings = [read_json(path)["timing"] for path in served.result_files()]
    assert sorted(t["model_reused"] for t in timings) == [False] + [True] * (len(timings) - 1)
    started = next(t for t in timings if not t["model_reused"])
    assert started["load_seconds"] > 0 and started["runner"] == "worker"


def test_every_serving_metric_has_an_interval_in_summary_json(served: ServedCampaign) -> None:
    summary = read_json(served.results / "summary.json")
    rows = {row["config_name"]: row for row in summary["rows"]}
    assert set(rows) == set(CONFIGS)
    for name, row in rows.items():
        for metric in SERVING_METRICS:
            ci = row["metrics"][metric]
            if metric in ENERGY_METRICS:
                assert ci["mean"] is None, (name, metric)
                continue
            assert ci["n"] == CYCLES, (name, metric)
            assert ci["ci_lower"] is not None and ci["ci_upper"] is not None, (name, metric)
            assert ci["ci_lower"] <= ci["mean"] <= ci["ci_upper"], (name, metric)
    achieved = {name: rows[name]["metrics"]["achieved_request_rate"]["mean"] for name in rows}
    slow, fast = (achieved[f"serve--request_rate-{rate}"] for rate in RATES)
    assert slow < fast
