"""Planning cost on a large campaign: 2,000 configs x 5 cycles = 10,000 experiments.

Prints the time of each controller step (load + validate, build the plan, serialise,
write, read back, and the reuse check a re-run makes) and the plan file's size.
Figures only, no assertions: run it on the machine you care about.

    .venv/bin/python bench/bench_plan.py [--configs 2000] [--cycles 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llenergymeasure.config.loader import load_campaign
from llenergymeasure.controller.plan import build_plan, plan_json, plan_or_reuse, read_plan

T = TypeVar("T")
HOSTS = ["gpu1", "gpu2", "gpu3", "gpu4"]


def campaign_file(directory: Path, configs: int, cycles: int) -> Path:
    """An inline-configs campaign (the slowest kind to load: every config is parsed)."""
    entries = [
        {
            "config_name": f"cfg-{i:05d}",
            "backend": ("pytorch", "vllm", "tensorrt")[i % 3],
            "model": {"path": f"/models/model-{i % 7}"},
            "precision": ("float16", "bfloat16")[i % 2],
            "decoder": {"max_new_tokens": 32 + i % 97, "temperature": (i % 5) / 10},
            "dataset": {"name": "builtin:short-prompts", "num_prompts": 16},
        }
        for i in range(configs)
    ]
    data = {
        "campaign_name": "bench",
        "configs": entries,
        "max_configs": configs,
        "execution": {"cycles": cycles, "order": "shuffled", "seed": 1},
    }
    path = directory / "bench.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def timed(label: str, action: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = action()
    print(f"{label:<34} {time.perf_counter() - start:8.3f} s")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        source = campaign_file(directory, args.configs, args.cycles)
        print(f"campaign: {args.configs} configs x {args.cycles} cycles, {len(HOSTS)} hosts")
        loaded = timed("load + validate (YAML, pydantic)", lambda: load_campaign(source))
        plan = timed("build plan", lambda: build_plan(loaded, HOSTS))
        text = timed("serialise to JSON", lambda: plan_json(plan))
        plan_path = directory / "plan.json"
        report: Any = timed(
            "plan_or_reuse: first write", lambda: plan_or_reuse(loaded, HOSTS, plan_path)
        )
        timed("read plan back (validated)", lambda: read_plan(plan_path))
        _, report = timed(
            "plan_or_reuse: reuse check", lambda: plan_or_reuse(loaded, HOSTS, plan_path)
        )
        print(
            f"experiments: {len(plan.experiments)}; plan file {len(text) / 1e6:.1f} MB; "
            f"reuse check said: {report.status}"
        )


if __name__ == "__main__":
    main()
