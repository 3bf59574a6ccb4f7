"""GuideLLM's command line and report (runner/loadgen.py), against a real 0.8.1 report.

tests/fixtures/guidellm-0.8.1-report.json: guidellm 0.8.1 run against `transformers serve
--continuous-batching` with the tiny model on CPU (12 requests at 2/s), trimmed to the
fields read. The window and serving figures are computed from it end to end.
"""

from __future__ import annotations

import json
import statistics
from itertools import pairwise
from pathlib import Path

import pytest

from llenergymeasure.config.models import ExperimentConfig, LoadConfig
from llenergymeasure.measure.steady import ServedRequest, steady_window
from llenergymeasure.runner import serve_run
from llenergymeasure.runner.loadgen import (
    SPARE_ROWS,
    TRACE_FILE,
    arrival_times,
    asked_requests,
    guidellm_argv,
    parse_report,
    read_report,
    write_trace,
)
from llenergymeasure.runner.serving import serving_block

REPORT = Path(__file__).resolve().parents[1] / "fixtures" / "guidellm-0.8.1-report.json"


def server_config(**load: object) -> ExperimentConfig:
    return ExperimentConfig.model_construct(
        **ExperimentConfig.model_validate(
            {"config_name": "s", "backend": "pytorch", "model": {"path": "/models/tiny"}}
        ).__dict__
    ).model_copy(
        update={
            "load": ExperimentConfig.model_fields["load"].annotation.model_validate(  # type: ignore[union-attr]
                {"mode": "server", "num_requests": 12, "warmup_requests": 2, **load}
            )
        }
    )


def test_a_real_report_gives_every_request_on_one_clock() -> None:
    requests, generator = read_report(REPORT)
    assert generator == "guidellm 0.8.1"
    assert len(requests) == 12 and all(r.ok for r in requests)
    assert requests[0].arrival_s == 0.0
    for r in requests:
        assert r.first_token_s is not None and r.end_s is not None
        assert r.arrival_s < r.first_token_s <= r.end_s
        assert r.output_tokens == 8 and r.input_tokens == 16
    # one response of that run came in one chunk (no token iteration): its first token is
    # its first chunk
    raw = json.loads(REPORT.read_text())["benchmarks"][0]["requests"]["successful"]
    timings = [entry["info"]["timings"] for entry in raw]
    origin = min(t["request_start"] for t in timings)
    one_chunk = [t for t in timings if t["first_token_iteration"] is None]
    assert len(one_chunk) == 1
    chunk_start = one_chunk[0]["first_request_iteration"] - origin
    assert any(r.first_token_s == pytest.approx(chunk_start) for r in requests)
    # 2 requests/s asked: 12 arrivals over about 5.5 s
    assert requests[-1].arrival_s == pytest.approx(5.5, abs=0.5)


def test_the_real_report_gives_a_window_and_serving_figures() -> None:
    requests, generator = read_report(REPORT)
    config = server_config(request_rate=2.0, min_window_seconds=1.0)
    window = steady_window(requests, "rate", warmup_requests=2, min_window_seconds=1.0)
    serving = serving_block(
        requests,
        window,
        config.load,
        energy_j=None,
        server="transformers serve",
        load_generator=generator,
    )
    assert 0 < serving.window.requests_completed < 12
    assert serving.achieved_request_rate == pytest.approx(2.0, rel=0.3)
    assert serving.ttft.p50 is not None and serving.itl.p50 is not None
    assert serving.energy_j is None  # no meter on this CPU host


def test_an_errored_request_keeps_its_error_and_a_report_without_requests_is_refused() -> None:
    report = json.loads(REPORT.read_text())
    bad = report["benchmarks"][0]["requests"]["successful"].pop()
    bad["info"].update(status="errored", error="HTTPStatusError('422 Unprocessable Entity')")
    report["benchmarks"][0]["requests"]["errored"] = [bad]
    requests = parse_report(report)
    assert sum(1 for r in requests if r.error) == 1 and "422" in next(
        r.error for r in requests if r.error
    )
    with pytest.raises(ValueError, match="no requests"):
        parse_report({"benchmarks": []})


@pytest.mark.parametrize(
    ("load", "profile"),
    [
        ({"request_rate": 4.0}, '{"kind":"replay","schedule_turn":"timestamp"}'),
        ({"max_concurrency": 3}, "kind=concurrent,streams=3"),
        ({"request_rate": "inf"}, "kind=throughput"),
    ],
)
def test_argv_names_the_load(load: dict[str, object], profile: str, tmp_path: Path) -> None:
    argv = guidellm_argv(
        server_config(seed=7, **load), "http://127.0.0.1:8000", "/models/tiny", tmp_path / "r.json"
    )
    assert argv[argv.index("--profile") + 1] == profile
    assert argv[argv.index("--seed") + 1] == "kind=static,value=7"
    if "request_rate" in load and load["request_rate"] != "inf":
        assert "--constraint" not in argv  # the trace's 12 rows are the requests
    else:
        assert argv[argv.index("--constraint") + 1] == "kind=max_requests,count=12"
    backend = json.loads(argv[argv.index("--backend") + 1])
    # GuideLLM adds ignore_eos for a trace's output lengths, which transformers serve
    # refuses (422): set to null here, GuideLLM drops it before sending
    assert backend["max_tokens"] == 32 and backend["extras"]["body"]["ignore_eos"] is None
    assert backend["target"] == "http://127.0.0.1:8000"


def test_a_rate_replays_lems_arrivals_from_the_trace_beside_the_report(tmp_path: Path) -> None:
    config = server_config(request_rate=4.0)
    argv = guidellm_argv(config, "http://127.0.0.1:8000", "/models/tiny", tmp_path / "r.json")
    data = json.loads(argv[argv.index("--data") + 1])
    assert data == {
        "kind": "trace_synthetic",
        "source": {"kind": "json_file", "path": str(tmp_path / TRACE_FILE)},
    }
    trace = [
        json.loads(line)
        for line in write_trace(config, tmp_path / TRACE_FILE).read_text().splitlines()
    ]
    # the asked arrivals, then SPARE_ROWS more of the same seeded draw
    assert len(trace) == config.load.num_requests + SPARE_ROWS
    times = [row["timestamp"] for row in trace]
    assert times == pytest.approx(arrival_times(config.load, SPARE_ROWS), abs=1e-6)
    assert times[: config.load.num_requests] == pytest.approx(arrival_times(config.load), abs=1e-6)
    assert {(row["input_length"], row["output_length"]) for row in trace} == {(32, 32)}


def test_a_replays_spare_row_is_cut_off_and_other_loads_keep_every_record() -> None:
    asked = 12
    sent = [ServedRequest(float(i), i + 0.1, i + 0.5, 32, 8) for i in range(asked + SPARE_ROWS)]
    replay = server_config(request_rate=4.0).load
    assert asked_requests(sent, replay) == sent[:asked]
    assert asked_requests(sent[:-2], replay) == sent[:-2]  # fewer than asked: all kept
    closed_loop = server_config(max_concurrency=4).load
    assert asked_requests(sent, closed_loop) == sent


def load(**fields: object) -> LoadConfig:
    return LoadConfig.model_validate({"mode": "server", "warmup_requests": 0, **fields})


def test_arrivals_are_seeded_and_keep_the_rate() -> None:
    poisson = arrival_times(load(request_rate=4.0, num_requests=4000, seed=3))
    assert poisson == arrival_times(load(request_rate=4.0, num_requests=4000, seed=3))
    assert poisson != arrival_times(load(request_rate=4.0, num_requests=4000, seed=4))
    assert poisson[0] == 0.0 and poisson == sorted(poisson)
    gaps = [b - a for a, b in pairwise(poisson)]
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.05)
    # exponential gaps (shape 1): the standard deviation equals the mean
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.08)


def test_burstiness_is_the_gamma_shape_of_the_gaps() -> None:
    bursty = arrival_times(load(request_rate=2.0, burstiness=0.25, num_requests=4000))
    smooth = arrival_times(load(request_rate=2.0, burstiness=16.0, num_requests=4000))
    for times in (bursty, smooth):
        assert statistics.fmean(b - a for a, b in pairwise(times)) == pytest.approx(0.5, rel=0.1)
    # coefficient of variation 1 / sqrt(shape): 2 for shape 0.25, 0.25 for shape 16
    cv = [
        statistics.stdev(g) / statistics.fmean(g)
        for g in ([b - a for a, b in pairwise(t)] for t in (bursty, smooth))
    ]
    assert cv[0] == pytest.approx(2.0, rel=0.15) and cv[1] == pytest.approx(0.25, rel=0.15)


def test_guidellm_workers_are_capped_at_this_process_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serve_run.os, "sched_getaffinity", lambda pid: {0, 1})
    assert serve_run.generator_env()["GUIDELLM__MAX_WORKER_PROCESSES"] == "2"
    monkeypatch.setattr(serve_run.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert serve_run.generator_env()["GUIDELLM__MAX_WORKER_PROCESSES"] == "10"
