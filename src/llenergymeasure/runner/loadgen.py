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

Known defect, seen for real (not yet worked around): guidellm 0.8.1's `poisson` profile
at 4 requests/s sent all 24 requests within 0.26 s (its `constant` profile keeps the
rate: the fixture's 12 requests at 2/s span 5.5 s). The steady window then comes out
0.2 s long and is flagged unstable, as it should. The way out the previous attempt took:
draw the seeded gamma arrivals here and have GuideLLM replay them (its `replay` profile
with a `trace_synthetic` dataset); its trace's output-token column makes GuideLLM send
`ignore_eos`, which transformers serve refuses, so that needs solving first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.measure.steady import ServedRequest

GENERATOR = "guidellm"
STATUSES = ("successful", "errored", "incomplete")
DEFAULT_PROMPT_TOKENS = 32


def profile_arg(config: ExperimentConfig) -> str:
    """`--profile`: poisson at the rate (seeded by `load.seed`), concurrent streams, or all
    at once (throughput) for rate 'inf'."""
    load = config.load
    if load.max_concurrency is not None:
        return f"kind=concurrent,streams={load.max_concurrency}"
    if load.request_rate == "inf":
        return "kind=throughput"
    return f"kind=poisson,rate={load.request_rate}"


def guidellm_argv(
    config: ExperimentConfig, base_url: str, served_model: str, report: Path
) -> list[str]:
    """`guidellm run` for `config`'s load against the server at `base_url`."""
    load = config.load
    backend = {
        "kind": "openai_http",
        "target": base_url,
        "model": served_model,
        "request_format": "/v1/completions",
        "max_tokens": config.decoder.max_new_tokens,
        "extras": {"body": {"temperature": config.decoder.temperature}},
    }
    return [
        "guidellm",
        "run",
        "--backend",
        json.dumps(backend, separators=(",", ":")),
        "--profile",
        profile_arg(config),
        "--seed",  # the poisson arrivals' and the synthetic prompts' seed
        f"kind=static,value={load.seed}",
        "--constraint",
        f"kind=max_requests,count={load.num_requests}",
        "--data",
        f"kind=synthetic_text,prompt_tokens={DEFAULT_PROMPT_TOKENS}",
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
