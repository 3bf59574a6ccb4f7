"""The answer of a GPU knob sweep: the Pareto front with CIs, and `lem recommend`'s pick.

The results are the EXAMPLE sweep of tests/fixtures/results.py (made-up numbers shaped like
a real SM-clock sweep), so every expected answer follows from KNOB_SWEEP by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.results import KNOB_SWEEP, knob_sweep_result, make_result, write_knob_sweep
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.results.aggregate import aggregate_directory, summary_markdown
from llenergymeasure.results.recommend import (
    RecommendError,
    pareto_summary,
    parse_slo,
    recommend,
    recommendation_lines,
)

RESAMPLES = 2_000


def sweep(cycles: int = 5, spread: float = 0.01, names: list[str] | None = None) -> list:
    return [
        knob_sweep_result(name, cycle, spread)
        for cycle in range(1, cycles + 1)
        for name in names or KNOB_SWEEP
    ]


def test_the_front_drops_settings_another_beats_on_both_axes() -> None:
    front = pareto_summary(sweep(), n_resamples=RESAMPLES)
    # sm900 costs more J/token than sm1200 and is slower: dominated. Every other setting is
    # either cheaper or faster than each of the rest, so it stays on the front.
    assert [p.config_name for p in front] == [
        "llama8b-vllm-default",
        "llama8b-vllm-pl400",
        "llama8b-vllm-sm1755",
        "llama8b-vllm-sm1500",
        "llama8b-vllm-sm1200",
    ]
    for point in front:
        for ci in (point.energy, point.latency):
            assert ci.ci_lower is not None and ci.ci_upper is not None
            assert ci.ci_lower < ci.mean < ci.ci_upper  # type: ignore[operator]


def test_no_front_without_a_sweep() -> None:
    # configs that all leave the GPU as it is are no knob sweep: nothing to add
    assert pareto_summary([make_result("a", c) for c in (1, 2, 3)], n_resamples=RESAMPLES) == []


def test_the_front_is_in_the_summary(tmp_path: Path) -> None:
    write_knob_sweep(tmp_path)
    summary = aggregate_directory(tmp_path, n_resamples=RESAMPLES)
    text = summary_markdown(summary)
    assert "## Energy-latency Pareto front of the GPU knob sweeps" in text
    assert "| llama8b-vllm-sm1200 | sm_clock_mhz=1200 |" in text
    assert "llama8b-vllm-sm900" not in text.split("## Energy-latency Pareto")[1]


def test_the_pick_is_the_least_j_per_token_meeting_the_slo() -> None:
    [answer] = recommend(sweep(), {"itl_p90_ms": 15.0}, n_resamples=RESAMPLES)
    assert answer.pick is not None and answer.pick.config_name == "llama8b-vllm-sm1200"
    assert answer.decided
    assert answer.baseline is not None and answer.baseline.config_name == "llama8b-vllm-default"
    ratio = answer.versus_baseline
    assert ratio is not None and ratio.ci_upper is not None
    assert ratio.mean == pytest.approx(0.214 / 0.300, rel=0.02)
    assert ratio.ci_upper < 1.0
    lines = "\n".join(recommendation_lines(answer))
    assert "recommended: llama8b-vllm-sm1200 (sm_clock_mhz=1200)" in lines
    assert "vs baseline llama8b-vllm-default" in lines


def test_a_tighter_slo_picks_a_faster_setting() -> None:
    [answer] = recommend(sweep(), {"itl_p90_ms": 10.0}, n_resamples=RESAMPLES)
    assert answer.pick is not None and answer.pick.config_name == "llama8b-vllm-sm1755"


def test_too_few_cycles_is_too_weak_to_choose() -> None:
    [answer] = recommend(sweep(cycles=2), {"itl_p90_ms": 15.0}, n_resamples=RESAMPLES)
    assert not answer.decided
    assert any("2 cycle(s)" in reason for reason in answer.weak_reasons)
    assert "evidence too weak" in "\n".join(recommendation_lines(answer))


def test_two_settings_the_noise_cannot_tell_apart_are_too_weak_to_choose() -> None:
    # sm1500 and sm1200 differ by 10 %; with 30 % cycle-to-cycle noise they cannot be told apart
    names = ["llama8b-vllm-default", "llama8b-vllm-sm1500", "llama8b-vllm-sm1200"]
    results = sweep(cycles=3, spread=0.3, names=names)
    [answer] = recommend(results, {"itl_p90_ms": 40.0}, n_resamples=RESAMPLES)
    assert not answer.decided
    assert any("cannot be told apart" in reason for reason in answer.weak_reasons)


def test_an_slo_nothing_meets_gives_no_pick() -> None:
    [answer] = recommend(sweep(), {"itl_p90_ms": 5.0}, n_resamples=RESAMPLES)
    assert answer.pick is None
    assert "no recommendation" in recommendation_lines(answer)[1]


@pytest.mark.parametrize("text", ["itl_p95_ms=50", "tpot_p90_ms=50", "itl_p90_ms=fast", "x"])
def test_a_bad_slo_names_the_key_and_the_vocabulary(text: str) -> None:
    with pytest.raises(RecommendError, match=text.split("=")[0]):
        parse_slo([text])


def test_lem_recommend_prints_the_pick(tmp_path: Path) -> None:
    write_knob_sweep(tmp_path)
    run = CliRunner().invoke(
        app, ["recommend", str(tmp_path), "--slo", "itl_p90_ms=15", "--resamples", "2000"]
    )
    assert run.exit_code == 0, run.output
    assert "recommended: llama8b-vllm-sm1200" in run.output
