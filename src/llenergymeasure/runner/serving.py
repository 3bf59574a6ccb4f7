"""A server-mode run's figures from its per-request records and its window (pure).

The load generator gives each request's arrival, first token, last token, output tokens
and error (no per-token times): a request's inter-token latency is its mean gap,
(last - first token) / (output tokens - 1). Latencies, SLO attainment and goodput are
over the requests that finished inside the steady-state window (measure/steady.py);
energy is the window's, read at its edges by the caller (None: no energy meter).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from llenergymeasure.config.models import LoadConfig
from llenergymeasure.contracts.result import Serving, ServingWindow
from llenergymeasure.files import atomic_write_text
from llenergymeasure.measure.steady import ServedRequest, SteadyWindow, completed_inside
from llenergymeasure.runner.experiment import distribution

REQUESTS_FILE = "requests.jsonl"


def ttft_s(request: ServedRequest) -> float | None:
    if request.first_token_s is None:
        return None
    return request.first_token_s - request.arrival_s


def itl_s(request: ServedRequest) -> float | None:
    """Mean gap between a request's tokens; None with fewer than two tokens."""
    if request.first_token_s is None or request.end_s is None or request.output_tokens < 2:
        return None
    return (request.end_s - request.first_token_s) / (request.output_tokens - 1)


def meets_slo(request: ServedRequest, load: LoadConfig) -> bool:
    """Both deadlines met; a request with one token has no ITL to miss."""
    assert load.slo is not None
    ttft, itl = ttft_s(request), itl_s(request)
    if ttft is None or ttft * 1000.0 > load.slo.ttft_ms:
        return False
    return itl is None or itl * 1000.0 <= load.slo.itl_ms


def serving_block(
    requests: Sequence[ServedRequest],
    window: SteadyWindow,
    load: LoadConfig,
    *,
    energy_j: float | None,
    server: str,
    load_generator: str,
) -> Serving:
    """The result's `serving` block for `requests` measured over `window`."""
    inside = completed_inside(requests, window.start_s, window.end_s)
    seconds = window.seconds
    tokens = round(window.output_tokens)
    good = [r for r in inside if meets_slo(r, load)] if load.slo is not None else None
    rate = len(inside) / seconds if seconds > 0 else 0.0
    per_request = _per(energy_j, len(inside))
    return Serving(
        server=server,
        load_generator=load_generator,
        requests_sent=len(requests),
        requests_failed=sum(1 for r in requests if r.error is not None),
        window=ServingWindow(
            definition=window.definition,
            start_s=window.start_s,
            end_s=window.end_s,
            seconds=seconds,
            requests_completed=len(inside),
            output_tokens=tokens,
            mean_in_flight=window.mean_in_flight,
            stable=window.stable,
            unstable_reasons=list(window.unstable_reasons),
        ),
        achieved_request_rate=rate,
        output_tokens_per_s=window.output_tokens / seconds if seconds > 0 else 0.0,
        energy_j=energy_j,
        j_per_output_token=_per(energy_j, window.output_tokens),
        j_per_request=per_request,
        # Wh per 1,000 requests (AI Energy Score's unit): J/request x 1000 / 3600
        wh_per_1k_requests=None if per_request is None else per_request / 3.6,
        ttft=distribution([v for r in inside if (v := ttft_s(r)) is not None]),
        itl=distribution([v for r in inside if (v := itl_s(r)) is not None]),
        e2e_latency=distribution([r.end_s - r.arrival_s for r in inside if r.end_s is not None]),
        slo_attainment_pct=100.0 * len(good) / len(inside) if good is not None and inside else None,
        goodput_rps=len(good) / seconds if good is not None and seconds > 0 else None,
        requests_file=REQUESTS_FILE,
    )


def _per(value: float | None, count: float) -> float | None:
    return None if value is None or count <= 0 else value / count


def write_requests(out_dir: Path, requests: Sequence[ServedRequest]) -> Path:
    """Every request's record, one JSON object a line, beside result.json."""
    target = out_dir / REQUESTS_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in requests)
    atomic_write_text(target, text, 0o644)
    return target
