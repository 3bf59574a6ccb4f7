"""`lem validate`, `lem grid` and `lem plan` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from llenergymeasure.cli import app
from llenergymeasure.commands.campaign import parse_vary
from llenergymeasure.config.loader import load_experiment
from llenergymeasure.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "campaigns").glob("**/*.yml"))
EXAMPLE_CONFIGS = {p for p in EXAMPLES if p.parent.name == "configs"}

runner = CliRunner()

BASE: dict[str, Any] = {
    "config_name": "tiny",
    "backend": "pytorch",
    "model": {"path": "/models/tiny"},
}


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_campaign(tmp_path: Path, **execution: Any) -> Path:
    configs = [{**BASE, "config_name": name} for name in ("a", "b", "c")]
    data = {"campaign_name": "demo", "configs": configs, "execution": execution}
    return write_yaml(tmp_path / "campaign.yml", data)


def lem(*args: str | Path) -> Any:
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.mark.parametrize("campaign", sorted(set(EXAMPLES) - EXAMPLE_CONFIGS), ids=str)
def test_shipped_campaigns_validate(campaign: Path) -> None:
    result = lem("validate", campaign)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"{campaign}: campaign ")


def test_validate_summarises_the_campaign(tmp_path: Path) -> None:
    result = lem("validate", write_campaign(tmp_path, cycles=4, order="shuffled", seed=7))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{tmp_path / 'campaign.yml'}: campaign demo is valid\n")
    for name in ("a", "b", "c"):
        assert f"│ {name} " in result.stdout
    assert result.stdout.endswith(
        "configs 3 x cycles 4 = experiments 12; backends pytorch (3); order shuffled; seed 7\n"
    )


def test_validate_reports_each_error_on_stderr_with_exit_2(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, cycles=0, colour="red")
    result = lem("validate", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {path}: execution.cycles: 0 is less than the minimum 1"
    assert lines[1].startswith(f"{path}: execution.colour: unknown key (value 'red')")


def test_validate_a_missing_file(tmp_path: Path) -> None:
    result = lem("validate", tmp_path / "none.yml")
    assert result.exit_code == 2
    assert f"{tmp_path / 'none.yml'}: file not found" in result.stderr


def test_parse_vary_reads_yaml_scalars() -> None:
    assert parse_vary(["pytorch.batch_size=1,4", "pytorch.use_cache=true,false"]) == {
        "pytorch.batch_size": [1, 4],
        "pytorch.use_cache": [True, False],
    }
    assert parse_vary(["decoder.temperature=0.0,0.7", "model.path=/m/a"]) == {
        "decoder.temperature": [0.0, 0.7],
        "model.path": ["/m/a"],
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["precision"], "expected KEY=V1,V2"),
        (["=1,2"], "expected KEY=V1,V2"),
        (["precision="], "expected KEY=V1,V2"),
        (["precision=float16,,bfloat16"], "empty value"),
        (["precision=a", "precision=b"], "--vary precision: given more than once"),
        (["model.path=[a"], "is not a YAML scalar"),
    ],
)
def test_parse_vary_rejects_malformed_items(items: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_vary(items)


def test_grid_writes_one_loadable_file_per_valid_config(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yml", BASE)
    out = tmp_path / "out"
    result = lem(
        "grid", base, "--vary", "backend=pytorch,vllm", "--vary", "pytorch.batch_size=1,4",
        "--vary", "vllm.max_num_seqs=8", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "tiny--pytorch--batch_size-1.yml",
        "tiny--pytorch--batch_size-4.yml",
        "tiny--vllm.yml",
    ]
    vllm = load_experiment(out / "tiny--vllm.yml")
    assert vllm.vllm is not None and vllm.vllm.max_num_seqs == 8
    assert vllm.pytorch is None
    assert "pytorch:" not in (out / "tiny--vllm.yml").read_text(encoding="utf-8")
    assert result.stdout.endswith(f"wrote 3 config files to {out}\n")


def test_grid_prints_counts_and_reasons_per_backend(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yml", {**BASE, "backend": "vllm"})
    result = lem(
        "grid", base, "--vary", "vllm.gpu_memory_utilization=0.5,1.5",
        "--vary", "precision=float16", "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 0
    assert "│ vllm    │ 1     │ 1       │" in result.stdout
    assert (
        "invalid: backend=vllm vllm.gpu_memory_utilization=1.5 precision=float16: "
        "vllm.gpu_memory_utilization: 1.5 is more than the maximum 1.0"
    ) in result.stdout


def test_grid_with_nothing_valid_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yml", {**BASE, "backend": "vllm"})
    out = tmp_path / "out"
    result = lem("grid", base, "--vary", "pytorch.batch_size=1,2", "--out", out)
    assert result.exit_code == 1
    assert result.stdout.count("pytorch.batch_size does not apply to backend=vllm") == 2
    assert not out.exists()


def test_grid_names_configs_after_the_base_file_when_it_has_no_name(tmp_path: Path) -> None:
    partial = {key: value for key, value in BASE.items() if key != "config_name"}
    base = write_yaml(tmp_path / "sweep.yml", partial)
    out = tmp_path / "out"
    assert lem("grid", base, "--vary", "precision=float16,bfloat16", "--out", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "sweep--precision-bfloat16.yml",
        "sweep--precision-float16.yml",
    ]


def test_grid_refuses_more_than_max_configs(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yml", BASE)
    out = tmp_path / "out"
    result = lem(
        "grid", base, "--vary", "pytorch.batch_size=1,2,3", "--vary", "decoder.top_k=1,2",
        "--max-configs", "5", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"{base}: vary: 6 combinations, more than max_configs=5" in result.stderr
    assert not out.exists()


def test_grid_rejects_a_base_that_is_not_a_mapping(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yml", ["not", "a", "mapping"])
    result = lem("grid", base, "--vary", "precision=float16", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert f"{base}: expected a mapping at the top level" in result.stderr


def test_plan_json_is_byte_identical_across_runs(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, cycles=2, order="shuffled")
    first = lem("plan", path, "--json", "--hosts", "h1,h2")
    second = lem("plan", path, "--json", "--hosts", "h1,h2")
    assert first.exit_code == 0
    assert first.stdout_bytes == second.stdout_bytes
    plan = json.loads(first.stdout)
    assert plan["hosts"] == ["h1", "h2"]
    assert len(plan["experiments"]) == 6


def test_plan_prints_a_table_by_default(tmp_path: Path) -> None:
    result = lem("plan", write_campaign(tmp_path, cycles=1), "--hosts", "h1,h2")
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if "demo__" in line]
    assert [row.split("│")[2].strip() for row in rows] == [
        "demo__a__c01",
        "demo__b__c01",
        "demo__c__c01",
    ]
    assert [row.split("│")[5].strip() for row in rows] == ["h1", "h2", "h1"]


def test_plan_out_writes_then_reuses_the_plan_file(tmp_path: Path) -> None:
    path = write_campaign(tmp_path, cycles=2)
    out = tmp_path / "results" / "demo" / "plan.json"
    first = lem("plan", path, "--out", out)
    assert first.exit_code == 0
    assert first.stdout == f"{out}: new plan written (6 experiments)\n"
    second = lem("plan", path, "--out", out, "--json")
    assert second.stderr == f"{out}: campaign and hosts unchanged, plan reused (6 experiments)\n"
    assert second.stdout == out.read_text(encoding="utf-8")


def test_plan_replan_needs_out(tmp_path: Path) -> None:
    result = lem("plan", write_campaign(tmp_path), "--replan")
    assert result.exit_code == 2
    assert "--replan needs --out" in result.stderr


def test_plan_rejects_a_repeated_host(tmp_path: Path) -> None:
    result = lem("plan", write_campaign(tmp_path), "--hosts", "h1,h1")
    assert result.exit_code == 2
    assert "hosts: h1 listed more than once" in result.stderr


@pytest.mark.parametrize("command", ["validate", "grid", "plan"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = lem(command, "--help")
    assert result.exit_code == 0
    assert f"Example: lem {command} " in result.stdout
