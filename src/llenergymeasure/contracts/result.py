"""The versioned schema of `result.json`, written by `lem experiment`.

Aggregation, the Ansible module and the callback read exactly this model.
A quantity that could not be measured on the host is ``None``, never estimated.
See docs/results.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llenergymeasure.contracts import headline
from llenergymeasure.contracts.headline import HEADLINE_METRICS as HEADLINE_METRICS

SCHEMA_VERSION = "1.0"

# nvml: the GPUs' energy counters; nvml_power: GPU power samples integrated (no counter)
EnergySource = Literal["nvml", "nvml_power", "rapl", "none"]
# How an idle figure was taken: the energy counter's delta, or the mean of power samples.
IdleMethod = Literal["energy_counter", "power_samples"]


class ResultModel(BaseModel):
    # Results are read back by newer code: tolerate fields added by later minor versions.
    model_config = ConfigDict(extra="ignore")


class Identity(ResultModel):
    exp_id: str | None = None
    campaign_name: str | None = None
    config_name: str
    config_hash: str | None = None
    cycle: int | None = None
    backend: str
    host: str | None = None


class Timing(ResultModel):
    started_at: str = Field(description="ISO 8601 UTC start of the experiment")
    finished_at: str
    load_seconds: float = Field(description="Model load time (0 when reused), engine import apart")
    import_seconds: float | None = Field(
        None,
        description="Import of the backend's module and engine before the load (0 when "
        "reused or already imported, e.g. by the worker at its start)",
    )
    model_reused: bool = False
    cold_start_method: Literal["fresh_process", "unload", "restart"] | None = None
    runner: Literal["worker", "in_process"] | None = Field(
        None,
        description="Where it ran: the service's `lem worker` (models kept loaded), or the "
        "`lem experiment` process itself (no worker; always a cold start)",
    )
    warmup_seconds: float
    window_seconds: float = Field(description="Length of the measurement window")
    window_repeats: int = Field(1, description="Times the prompt set ran in the window")
    total_seconds: float
    gap_waited_seconds: float | None = None


class Tokens(ResultModel):
    requests: int
    input_tokens: int
    output_tokens: int


class Throughput(ResultModel):
    output_tokens_per_s: float
    requests_per_s: float


class Distribution(ResultModel):
    """Seconds. ``None`` when the backend could not measure it."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    n: int = 0


class Ttft(Distribution):
    """Time to first token; engines stamp a request's start in different places."""

    definition: str | None = Field(
        None,
        description="What it counts from: batch_start, frontend_arrival, llm_submit or "
        "executor_arrival (docs/results.md)",
    )


# How the thermal waiter judged a GPU settled before its idle figure was taken.
SettledBy = Literal["earlier_idle", "steady"]


class IdleConditions(ResultModel):
    """How one GPU's idle figure (measure/baseline.py) was taken."""

    power_w: float
    temperature_c: float | None = Field(None, description="At the end of the idle period")
    age_s: float | None = Field(None, description="Seconds since it was measured")
    method: IdleMethod
    seconds: float | None = Field(None, description="Length of the idle period")
    settled: bool | None = Field(
        None,
        description="True: measured once the thermal waiter said the GPU had settled (see "
        "settled_by); False: the wait hit its cap; None: taken before settling was checked",
    )
    settled_by: SettledBy | None = Field(
        None,
        description="earlier_idle: back near the earlier idle temperature and power; "
        "steady: no earlier idle figure, temperature and power had stopped falling",
    )
    settle_waited_s: float | None = Field(None, description="How long it waited to settle")


class Energy(ResultModel):
    source: EnergySource
    gpu_energy_j: float | None = None
    gpu_energy_j_per_gpu: list[float] | None = None
    cpu_energy_j: float | None = None
    total_energy_j: float | None = Field(
        None, description="GPU energy if nvml or nvml_power, else CPU (rapl)"
    )
    idle_baseline_power_w: float | None = None
    idle_baseline_power_w_per_gpu: list[float] | None = None
    idle_baseline_conditions: list[IdleConditions] | None = None
    idle_adjusted_energy_j: float | None = None
    j_per_output_token: float | None = None
    j_per_request: float | None = None
    adjusted_j_per_output_token: float | None = None


class Power(ResultModel):
    sample_interval_ms: int
    mean_w: float | None = None
    peak_w: float | None = None
    samples_t: list[float] = Field(default_factory=list, description="Seconds since window start")
    samples_w: list[float] = Field(default_factory=list, description="Summed over the GPUs")


class Thermal(ResultModel):
    temperature_start_c: float | None = None
    temperature_max_c: float | None = None
    temperature_mean_c: float | None = None
    throttle_reasons: list[str] = Field(default_factory=list)
    throttled: bool | None = None


class Environment(ResultModel):
    hostname: str
    cpu_model: str | None = None
    gpu_name: str | None = None
    gpu_count: int = 0
    gpu_uuids: list[str] = Field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None
    power_limit_w: list[float] = Field(default_factory=list)
    sm_clock_mhz: list[int] = Field(default_factory=list)
    mem_clock_mhz: list[int] = Field(default_factory=list)
    python_version: str
    lem_version: str
    versions: dict[str, str] = Field(
        default_factory=dict, description="torch, transformers, vllm, tensorrt_llm, ... as found"
    )
    device: str = Field(description="'cuda' or 'cpu'")

    @property
    def hardware(self) -> str:
        """Hardware key for aggregation: results on different hardware are never pooled."""
        if self.gpu_name:
            return f"{self.gpu_count}x {self.gpu_name}"
        return self.cpu_model or "unknown-cpu"


class GpuKnob(ResultModel):
    """One GPU knob the host set for this experiment (docs/knobs.md)."""

    knob: str = Field(description="sm_clock_mhz, mem_clock_mhz or power_limit_w")
    gpu_index: int
    asked: int
    applied: float | None = Field(description="NVML's read-back after setting; null: unreadable")
    supported_min: int
    supported_max: int


class ServingWindow(ResultModel):
    """The steady-state window of a server-mode run (docs/server-mode.md).

    Times are seconds on the run's clock (the same clock as `requests.jsonl`'s records).
    """

    definition: Literal["concurrency", "rate"] = Field(
        description="concurrency: from when max_concurrency requests have their first token "
        "to when the tail starts draining; rate: after the warm-up requests, once the "
        "in-flight count is stable, to before the last arrivals drain"
    )
    start_s: float
    end_s: float
    seconds: float
    requests_completed: int = Field(description="Requests that finished inside the window")
    output_tokens: int = Field(description="Output tokens generated inside the window")
    mean_in_flight: float
    stable: bool
    unstable_reasons: list[str] = Field(default_factory=list)


class Serving(ResultModel):
    """A server-mode run's load, window and per-request figures; null for offline runs.

    The run also fills the top-level blocks from the window: `energy` (NVML counters read at
    the window's edges), `tokens`, `throughput`, `latency` (end to end), `ttft`, `itl`.
    """

    server: str = Field(description="The engine's server, e.g. 'transformers serve'")
    load_generator: str = Field(description="Name and version, e.g. 'guidellm 0.8.1'")
    requests_sent: int
    requests_failed: int
    window: ServingWindow
    achieved_request_rate: float = Field(description="Requests/s completed inside the window")
    output_tokens_per_s: float
    energy_j: float | None = Field(None, description="Energy inside the window")
    j_per_output_token: float | None = None
    j_per_request: float | None = None
    wh_per_1k_requests: float | None = None
    ttft: Distribution
    itl: Distribution
    e2e_latency: Distribution
    slo_attainment_pct: float | None = Field(
        None, description="% of the window's requests meeting both deadlines; null: no SLO"
    )
    goodput_rps: float | None = Field(None, description="Requests/s meeting the SLO")
    requests_file: str = Field(
        description="Per-request records, relative to result.json: requests.jsonl"
    )


class ExperimentResult(ResultModel):
    schema_version: str = SCHEMA_VERSION
    identity: Identity
    config: dict[str, Any]
    timing: Timing
    tokens: Tokens
    throughput: Throughput
    latency: Distribution
    ttft: Ttft
    itl: Distribution
    energy: Energy
    power: Power
    thermal: Thermal
    environment: Environment
    foreign_gpu_processes: list[dict[str, Any]] = Field(default_factory=list)
    gpu_knobs: list[GpuKnob] = Field(
        default_factory=list, description="GPU knobs set on the host: asked, applied, range"
    )
    serving: Serving | None = Field(None, description="Server mode only (load.mode: server)")
    warnings: list[str] = Field(default_factory=list)

    def wh_per_1k_requests(self) -> float | None:
        """Watt-hours per 1,000 requests (the AI Energy Score unit): J/request / 3.6."""
        return headline.wh_per_1k_requests(self)

    def headline_metrics(self) -> dict[str, float | None]:
        """The numbers aggregated over cycles and returned by the Ansible module."""
        return headline.headline_metrics(self)

    def serving_metrics(self) -> dict[str, float | None]:
        """Server mode's own numbers (docs/server-mode.md); all null for an offline run."""
        s = self.serving
        if s is None:
            return dict.fromkeys(SERVING_METRICS)
        found: dict[str, float | None] = {
            "achieved_request_rate": s.achieved_request_rate,
            "serving_output_tokens_per_s": s.output_tokens_per_s,
            "serving_j_per_output_token": s.j_per_output_token,
            "serving_j_per_request": s.j_per_request,
            "serving_wh_per_1k_requests": s.wh_per_1k_requests,
            "slo_attainment_pct": s.slo_attainment_pct,
            "goodput_rps": s.goodput_rps,
            "mean_in_flight": s.window.mean_in_flight,
            "window_s": s.window.seconds,
        }
        for name, dist in (("ttft", s.ttft), ("itl", s.itl), ("e2e", s.e2e_latency)):
            for stat in ("p50", "p90", "p99"):
                found[f"{name}_{stat}_s"] = getattr(dist, stat)
        return {metric: found[metric] for metric in SERVING_METRICS}


# Aggregated (with intervals) only for a summary that holds server-mode results.
SERVING_METRICS: tuple[str, ...] = (
    "achieved_request_rate",
    "serving_output_tokens_per_s",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "itl_p50_s",
    "itl_p90_s",
    "itl_p99_s",
    "e2e_p50_s",
    "e2e_p90_s",
    "e2e_p99_s",
    "slo_attainment_pct",
    "goodput_rps",
    "mean_in_flight",
    "window_s",
    "serving_j_per_output_token",
    "serving_j_per_request",
    "serving_wh_per_1k_requests",
)
