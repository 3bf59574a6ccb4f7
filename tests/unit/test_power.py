"""How many cycles a comparison needs, checked by simulation like the interval coverage.

Cycle k of both configs shares a condition effect (sd 10 J); each adds its own noise.
The config uses 5 % more energy. At the number of cycles suggested, the product's own
paired interval (lem compare's) must exclude 1 in about 80 % of simulated campaigns.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest
from fixtures.results import make_result, write_result
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.stats import ratio_ci_many
from llenergymeasure.stats.power import cycles_needed, detectable_difference

REPLICATES = 2_000
RESAMPLES = 2_000
DIFFERENCE = 0.05
runner = CliRunner()


def campaigns(noise_sd: float, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(config, baseline) energies: 5 % apart, a shared cycle effect, own noise each."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.0, 10.0, shape)
    config = 100.0 * (1 + DIFFERENCE) + shared + rng.normal(0.0, noise_sd, shape)
    baseline = 100.0 + shared + rng.normal(0.0, noise_sd, shape)
    return config, baseline


def detection_rate(noise_sd: float, n: int) -> float:
    config, baseline = campaigns(noise_sd, (REPLICATES, n), seed=n)
    cis = ratio_ci_many(list(zip(config, baseline, strict=True)), n_resamples=RESAMPLES)
    return float(np.mean([ci.ci_lower > 1.0 or ci.ci_upper < 1.0 for ci in cis]))  # type: ignore[operator]


def suggested_by_pilot(tmp_path: Path, noise_sd: float, pilot_cycles: int) -> int:
    """`lem plan --pilot` on a pilot run's result files."""
    config, baseline = campaigns(noise_sd, (pilot_cycles,), seed=99)
    for cycle in range(pilot_cycles):
        for name, energy in (("candidate", config[cycle]), ("base", baseline[cycle])):
            write_result(tmp_path, make_result(name, cycle + 1, energy_j=float(energy)))
    args = ["plan", "--pilot", str(tmp_path), "--baseline", "base", "--metric", "energy_j"]
    result = runner.invoke(app, [*args, "--detect", "5%"])
    assert result.exit_code == 0, result.output
    return int(re.search(r"suggested cycles .*: (\d+)$", result.output.strip()).group(1))  # type: ignore[union-attr]


# noise sd 1.5: Student-t territory (4 cycles); 2.5 and 3.5: the bootstrap-t (7, 11)
@pytest.mark.parametrize("noise_sd", [1.5, 2.5, 3.5])
def test_the_suggested_cycles_detect_the_difference_about_80_percent_of_the_time(
    noise_sd: float,
) -> None:
    cv = math.sqrt(2) * noise_sd / 100.0  # the shared effect cancels in the differences
    n = cycles_needed(cv, DIFFERENCE)
    assert n is not None
    assert 0.76 <= detection_rate(noise_sd, n) <= 0.92, n
    # and not needlessly many: one cycle fewer falls short of 80 %
    assert detection_rate(noise_sd, n - 1) < 0.80, n


def test_lem_plan_pilot_suggests_cycles_that_detect_the_difference(tmp_path: Path) -> None:
    n = suggested_by_pilot(tmp_path, noise_sd=2.5, pilot_cycles=60)
    assert 5 <= n <= 10  # the true CV gives 7
    assert 0.70 <= detection_rate(2.5, n) <= 0.95


def test_detectable_difference_shrinks_with_cycles_and_is_none_below_two() -> None:
    assert detectable_difference(0.03, 1) is None
    assert detectable_difference(None, 5) is None
    widths = [detectable_difference(0.03, n) for n in range(2, 20)]
    assert all(a > b for a, b in itertools.pairwise(widths))  # type: ignore[operator]
    n = cycles_needed(0.03, DIFFERENCE)
    assert detectable_difference(0.03, n) <= DIFFERENCE < detectable_difference(0.03, n - 1)  # type: ignore[arg-type, operator]


def test_lem_compare_reports_detectable_difference_and_cycles_needed(tmp_path: Path) -> None:
    config, baseline = campaigns(2.5, (5,), seed=5)
    for cycle in range(5):
        write_result(tmp_path, make_result("candidate", cycle + 1, energy_j=float(config[cycle])))
        write_result(tmp_path, make_result("base", cycle + 1, energy_j=float(baseline[cycle])))
    args = ["compare", str(tmp_path), "--baseline", "base", "--detect", "5%"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "detectable" in result.output and "cycles for 5.0%" in result.output
    line = next(line for line in result.output.splitlines() if "energy (J)" in line)
    cells = re.split(r"\s{2,}", line.strip())
    differences = config - baseline
    cv = differences.std(ddof=1) / baseline.mean()
    assert cells[-2] == f"{detectable_difference(cv, 5):.1%}"
    assert cells[-1] == str(cycles_needed(cv, DIFFERENCE))


@pytest.mark.parametrize("text", ["five", "-5%", "0"])
def test_bad_detect_is_refused_with_the_value(tmp_path: Path, text: str) -> None:
    result = runner.invoke(app, ["compare", str(tmp_path), "--baseline", "b", "--detect", text])
    assert result.exit_code != 0 and text in result.output


def test_pilot_needs_a_baseline(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--pilot", str(tmp_path)])
    assert result.exit_code != 0 and "--baseline" in result.output
