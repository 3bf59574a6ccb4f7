"""Request records from the outputs of engines that time requests themselves (vLLM, TensorRT-LLM).

Both engines' offline APIs return, per request, the prompt token ids, the generated
token ids and (when enabled) the request's arrival, first-token and last-token times.
They do not time each token, so a request's inter-token latencies are its decode time
spread evenly over its token gaps: their mean is exact, their spread is not measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llenergymeasure.runner.backends.base import BatchOutcome, RequestRecord


@dataclass(frozen=True)
class RequestTiming:
    """Seconds: arrival to last token, arrival to first token, first to last token."""

    latency_s: float
    ttft_s: float
    decode_s: float


def record(input_tokens: int, output_tokens: int, timing: RequestTiming) -> RequestRecord:
    gaps = output_tokens - 1
    return RequestRecord(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_s=timing.latency_s,
        ttft_s=timing.ttft_s,
        itl_s=[timing.decode_s / gaps] * gaps if gaps > 0 else [],
    )


def parse_engine_outputs(
    outputs: list[Any],
    timing_of: Callable[[Any], RequestTiming | None],
    engine: str,
) -> BatchOutcome:
    """One record per `RequestOutput` (prompt order), timed by `timing_of(output)`.

    A request the engine did not time gets null latency, TTFT and inter-token latency
    (never a stand-in such as the batch's wall-clock time), with a warning; the result's
    latency count against its request count then shows how many were timed.
    """
    outcome = BatchOutcome(records=[])
    untimed = 0
    for output in outputs:
        input_tokens = len(output.prompt_token_ids or [])
        output_tokens = len(output.outputs[0].token_ids or [])
        timing = timing_of(output)
        if timing is None:
            untimed += 1
            outcome.records.append(RequestRecord(input_tokens, output_tokens, latency_s=None))
        else:
            outcome.records.append(record(input_tokens, output_tokens, timing))
    if untimed:
        outcome.warnings.append(
            f"{engine} returned no timing for some requests: their latency, TTFT and "
            "inter-token latency are null (not measured)"
        )
    if untimed < len(outputs):
        outcome.warnings.append(
            f"{engine} times first and last tokens, not each token: inter-token latencies "
            "are per-request means"
        )
    return outcome
