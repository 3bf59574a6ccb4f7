"""GuideLLM (vLLM project) as server mode's load generator: its command line and its report.

Why GuideLLM (docs/server-mode.md): its JSON report keeps every request with its own
timings (request start, first and last token, end), token counts and error; it has open
loop rate profiles (constant, poisson with a seed) and a closed loop (concurrent streams);
it is one pure-Python wheel on PyPI, so the offline wheelhouse carries it.

Checked against guidellm 0.8.1 run for real against `transformers serve`
(tests/fixtures/guidellm-0.8.1-report.json is that run's report, trimmed): with fixed
output tokens in the data, GuideLLM sends vLLM's `ignore_eos`, which `transformers serve`
refuses (HTTP 422); the output length is therefore the backend's `max_tokens` and greedy
decoding (`temperature: 0`) is sent as an extra body field.

Arrivals at a request rate: guidellm 0.8.1's `poisson` profile does not keep its rate
(seen for real: 24 requests at 4/s sent within 0.26 s), so lem draws the seeded gamma
arrivals itself (`arrival_times`) and GuideLLM replays them (`replay` profile at the trace's
timestamps, `trace_synthetic` data). A trace's output lengths make GuideLLM add vLLM's
`ignore_eos`, which `transformers serve` refuses (HTTP 422); the backend's extra body sets
it to null, and GuideLLM drops null keys before it sends a request (its http backend's
`deep_filter`), so the output length is the request's `max_tokens` and decoding stops at
the end-of-sequence token. Checked for real against `transformers serve`: 12 replayed
requests, every one answered 200, arrivals at the trace's times.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llenergymeasure.config.models import ExperimentConfig, LoadConfig
from llenergymeasure.files import atomic_write_text
from llenergymeasure.measure.steady import ServedRequest

GENERATOR = "guidellm"
STATUSES = ("successful", "errored", "incomplete")
DEFAULT_PROMPT_TOKENS = 32


TRACE_FILE = "arrivals.jsonl"
# GuideLLM 0.8.1's replay now and then leaves a trace's last row unsent (4 runs of 8 on
# 17 rows, always the last: docs/server-mode.md): a trace carries this many rows after
# the asked ones, so that the asked ones are sent.
SPARE_ROWS = 1


def replays_arrivals(load: LoadConfig) -> bool:
    """A finite request rate: lem's own seeded arrivals, replayed by GuideLLM."""
    return load.max_concurrency is None and load.request_rate != "inf"


def arrival_times(load: LoadConfig, spare: int = 0) -> list[float]:
    """`load.num_requests` (+ `spare`) arrival times in seconds from the first (at 0): gaps
    drawn from a gamma distribution of shape `burstiness` and mean 1 / `request_rate`
    (shape 1 is Poisson), seeded by `load.seed`, so that every cycle sends the same."""
    assert isinstance(load.request_rate, float)
    rng = random.Random(load.seed)
    shape = load.burstiness
    scale = 1.0 / (load.request_rate * shape)
    times, now = [], 0.0
    for _ in range(load.num_requests + spare):
        times.append(now)
        now += rng.gammavariate(shape, scale)
    return times


def write_trace(config: ExperimentConfig, path: Path) -> Path:
    """The arrivals as GuideLLM's minimal trace (timestamp, prompt and output tokens), with
    SPARE_ROWS after the asked ones (`asked_requests` cuts them off again)."""
    rows = (
        {
            "timestamp": round(at, 6),
            "input_length": DEFAULT_PROMPT_TOKENS,
            "output_length": config.decoder.max_new_tokens,
        }
        for at in arrival_times(config.load, SPARE_ROWS)
    )
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows), 0o644)
    return path


def asked_requests(requests: list[ServedRequest], load: LoadConfig) -> list[ServedRequest]:
    """The first `load.num_requests` of a replay's records (in arrival order): a spare row
    the generator sent is left out, so it lies after the window's end (its last arrival)."""
    return requests[: load.num_requests] if replays_arrivals(load) else requests


def profile_arg(config: ExperimentConfig) -> str:
    """`--profile`: concurrent streams, all at once (throughput) for rate 'inf', or the
    arrivals trace replayed at its timestamps."""
    load = config.load
    if load.max_concurrency is not None:
        return f"kind=concurrent,streams={load.max_concurrency}"
    if load.request_rate == "inf":
        return "kind=throughput"
    return json.dumps({"kind": "replay", "schedule_turn": "timestamp"}, separators=(",", ":"))


def data_arg(config: ExperimentConfig, trace: Path) -> str:
    if replays_arrivals(config.load):
        source = {"kind": "json_file", "path": str(trace)}
        return json.dumps({"kind": "trace_synthetic", "source": source}, separators=(",", ":"))
    return f"kind=synthetic_text,prompt_tokens={DEFAULT_PROMPT_TOKENS}"


def guidellm_argv(
    config: ExperimentConfig, base_url: str, served_model: str, report: Path
) -> list[str]:
    """`guidellm run` for `config`'s load against the server at `base_url`; a rate's
    arrivals trace is read from TRACE_FILE beside `report` (`write_trace`)."""
    load = config.load
    backend = {
        "kind": "openai_http",
        "target": base_url,
        "model": served_model,
        "request_format": "/v1/completions",
        "max_tokens": config.decoder.max_new_tokens,
        # null: never sent (see the module's docstring)
        "extras": {"body": {"temperature": config.decoder.temperature, "ignore_eos": None}},
    }
    # A replayed trace sends its own rows and stops; a max_requests constraint on top was
    # seen to stop it one short (11 of 12, in some runs).
    constraint = (
        []
        if replays_arrivals(load)
        else ["--constraint", f"kind=max_requests,count={load.num_requests}"]
    )
    return [
        "guidellm",
        "run",
        "--backend",
        json.dumps(backend, separators=(",", ":")),
        "--profile",
        profile_arg(config),
        "--seed",  # the synthetic prompts' seed (the arrivals are seeded by lem)
        f"kind=static,value={load.seed}",
        *constraint,
        "--data",
        data_arg(config, report.parent / TRACE_FILE),
        "--tokenizer",
        f"kind=hf_auto,model={config.model.path}",
        "--output",
        f"kind=json,path={report}",
        "--disable-console-interactive",
    ]


def _request(entry: Mapping[str, Any], origin: float) -> ServedRequest:
    info = entry["info"]
    timings = info["timings"]

    def at(*names: str) -> float | None:
        for name in names:
            if timings.get(name) is not None:
                return float(timings[name]) - origin
        return None

    arrival = at("request_start", "targeted_start")
    assert arrival is not None  # every request has one of them (checked by the caller)
    error = info.get("error")
    if error is None and info.get("status") != "completed":  # cancelled, or never finished
        error = f"request {info.get('status')}"
    output_tokens = int(entry.get("output_metrics", {}).get("text_tokens") or 0)
    # A response whose tokens all came in one chunk has no token iteration (seen with
    # transformers serve): its first token is then its first chunk.
    first_token = at("first_token_iteration")
    if first_token is None and output_tokens > 0:
        first_token = at("first_request_iteration")
    return ServedRequest(
        arrival_s=arrival,
        first_token_s=first_token,
        end_s=at("request_end", "last_token_iteration", "resolve_end"),
        input_tokens=int(entry.get("input_metrics", {}).get("text_tokens") or 0),
        output_tokens=output_tokens,
        error=error,
    )


def parse_report(report: Mapping[str, Any], origin: float | None = None) -> list[ServedRequest]:
    """Every request of GuideLLM's JSON report in arrival order, in seconds from `origin`
    (a Unix time: GuideLLM stamps with time.time()), by default from the first start; a
    report without requests is a ValueError."""
    entries = [
        entry
        for benchmark in report.get("benchmarks", [])
        for status in STATUSES
        for entry in (benchmark.get("requests", {}).get(status) or [])
    ]
    starts = [
        entry["info"]["timings"].get("request_start")
        or entry["info"]["timings"].get("targeted_start")
        for entry in entries
    ]
    if not entries or any(start is None for start in starts):
        raise ValueError("the load generator's report has no requests with start times")
    if origin is None:
        origin = min(float(start) for start in starts)
    return sorted((_request(e, origin) for e in entries), key=lambda r: r.arrival_s)


def read_report(path: Path, origin: float | None = None) -> tuple[list[ServedRequest], str]:
    """The requests of the report at `path`, and the generator's name and version."""
    report = json.loads(path.read_text())
    version = report.get("metadata", {}).get("guidellm_version") or "unknown version"
    return parse_report(report, origin), f"{GENERATOR} {version}"
