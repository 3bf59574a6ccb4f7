"""The controller's work on 10,000 experiments: planning, each host's share, aggregation.

Planning: load and validate a campaign of 2,000 configs x 5 cycles, build the plan,
write plan.json, check it for reuse (what a re-run does), and slice each host's share
as the playbook's lem_host_share filter does. Aggregation: 10,000 synthetic result
files in the documented schema (tests/fixtures/results.py) read back, grouped and
bootstrapped (10,000 resamples per metric and group) into summary.{json,csv,md}, as
the lem_campaign callback does. Prints the time of each step; asserts nothing.

    .venv/bin/python bench/bench_controller.py [--configs 2000] [--cycles 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_plan import HOSTS, campaign_file, timed

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.controller.plan import Plan, build_plan, plan_or_reuse
from llenergymeasure.results.aggregate import aggregate_results, load_result_files, write_summary

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "filter_plugins"))

from fixtures.results import make_result, write_result  # noqa: E402
from lem import lem_host_share  # noqa: E402  (the playbook's filter)


def plan_steps(directory: Path, configs: int, cycles: int) -> Plan:
    source = campaign_file(directory, configs, cycles)
    loaded = timed("load + validate the campaign", lambda: load_campaign(source))
    plan = timed("build the plan", lambda: build_plan(loaded, HOSTS))
    plan_file = directory / "plan.json"
    timed("plan_or_reuse: write plan.json", lambda: plan_or_reuse(loaded, HOSTS, plan_file))
    timed("plan_or_reuse: reuse check", lambda: plan_or_reuse(loaded, HOSTS, plan_file))
    plan_data = plan.model_dump(mode="json")
    timed(
        f"lem_host_share for {len(HOSTS)} hosts",
        lambda: [lem_host_share(plan_data, host) for host in HOSTS],
    )
    return plan


def write_results(root: Path, plan: Plan) -> None:
    """One synthetic result per planned experiment, energy varying with config and cycle."""
    for index, experiment in enumerate(plan.experiments):
        result = make_result(
            experiment.config_name,
            experiment.cycle,
            campaign_name=plan.campaign_name,
            config_hash=experiment.config_hash,
            energy_j=300.0 + index % 97 + experiment.cycle,
            host=experiment.host,
        )
        write_result(root, result)


def aggregation_steps(directory: Path, plan: Plan) -> None:
    results_dir = directory / "results"
    timed(f"write {len(plan.experiments)} result files", lambda: write_results(results_dir, plan))
    loaded = timed("read + validate the result files", lambda: load_result_files(results_dir))
    summary = timed(
        "aggregate (bootstrap CIs)",
        lambda: aggregate_results(loaded.results, sources=loaded.sources),
    )
    timed("write summary.{json,csv,md}", lambda: write_summary(summary, directory / "summary"))
    print(f"summary: {len(summary.rows)} rows x {len(summary.metrics)} metrics")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print(f"campaign: {args.configs} configs x {args.cycles} cycles, {len(HOSTS)} hosts")
        plan = plan_steps(directory, args.configs, args.cycles)
        print(f"experiments: {len(plan.experiments)}")
        aggregation_steps(directory, plan)


if __name__ == "__main__":
    main()
