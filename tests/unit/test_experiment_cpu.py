"""`lem experiment` end to end on the CPU with the tiny model (no Docker, no network).

The first two tests run the real command in a fresh process, as the Ansible module
does inside a container; the others call the runner in-process to check its parts.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures.results import make_result, read_result
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from llenergymeasure.commands.runner import default_baseline_cache
from llenergymeasure.config.models import DecoderConfig, ExperimentConfig, PyTorchConfig
from llenergymeasure.contracts.result import ExperimentResult
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends.pytorch import (
    count_output_tokens,
    generation_settings,
    request_record,
)
from llenergymeasure.runner.experiment import (
    RunIdentity,
    describe_failure,
    distribution,
    experiment_gpus,
    load_model,
    measure_experiment,
    run_experiment,
    write_result,
)
from llenergymeasure.runner.prompts import read_prompt_set

LEM = Path(sys.executable).with_name("lem")
ENERGY_FIELDS = (
    "gpu_energy_j",
    "gpu_energy_j_per_gpu",
    "cpu_energy_j",
    "total_energy_j",
    "idle_adjusted_energy_j",
    "j_per_output_token",
    "j_per_request",
    "adjusted_j_per_output_token",
)


def config_data(model_dir: Path, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "config_name": "tiny-cpu",
        "backend": "pytorch",
        "model": {"path": str(model_dir)},
        "decoder": {"max_new_tokens": 12},
        "pytorch": {"batch_size": 2},
        "dataset": {"name": "builtin:short-prompts", "num_prompts": 4},
        "measurement": {"warmup_prompts": 1, "min_window_seconds": 1.0, "baseline_seconds": 0},
    }
    data.update(sections)
    return data


def tiny_config(model_dir: Path, **sections: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate(config_data(model_dir, **sections))


def run_lem(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [str(LEM), *args], capture_output=True, text=True, env=full_env, check=False
    )


def test_lem_experiment_writes_a_result_that_meets_the_schema(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(config_data(tiny_model_dir)), encoding="utf-8")
    out = tmp_path / "out"
    identity_env = {
        "LEM_EXP_ID": "demo__tiny-cpu__c02",
        "LEM_CONFIG_HASH": "0123456789abcdef",
        "LEM_CYCLE": "2",
        "LEM_CAMPAIGN": "demo",
        "LEM_HOST": "localhost",
    }

    completed = run_lem("experiment", str(config_file), "--out", str(out), env=identity_env)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("\n") == 1
    assert completed.stdout.startswith("demo__tiny-cpu__c02: ")
    result = read_result(out / "result.json")
    assert result.identity.model_dump() == {
        "exp_id": "demo__tiny-cpu__c02",
        "campaign_name": "demo",
        "config_name": "tiny-cpu",
        "config_hash": "0123456789abcdef",
        "cycle": 2,
        "backend": "pytorch",
        "host": "localhost",
    }
    assert result.config == ExperimentConfig.model_validate(result.config).model_dump(mode="json")
    assert result.timing.window_seconds >= 1.0
    assert result.timing.model_reused is False and result.timing.load_seconds > 0
    assert result.tokens.requests == 4 * result.timing.window_repeats
    assert 0 < result.tokens.output_tokens <= 12 * result.tokens.requests
    assert result.ttft.mean < result.latency.mean
    assert result.latency.n == result.ttft.n == result.tokens.requests
    assert result.throughput.output_tokens_per_s == pytest.approx(
        result.tokens.output_tokens / result.timing.window_seconds
    )
    assert_energy_is_honest(result)
    assert result.environment.device == "cpu"
    assert "torch" in result.environment.versions
    assert stat.S_IMODE((out / "result.json").stat().st_mode) == 0o644
    assert [p.name for p in out.iterdir()] == ["result.json"]


def assert_energy_is_honest(result: ExperimentResult) -> None:
    energy = result.energy
    assert energy.source in ("rapl", "none")
    if energy.source == "none":
        assert all(getattr(energy, name) is None for name in ENERGY_FIELDS)
        assert any("energy is null" in warning for warning in result.warnings)
    else:
        assert energy.cpu_energy_j is not None and energy.cpu_energy_j >= 0
        assert energy.total_energy_j == energy.cpu_energy_j
        assert energy.gpu_energy_j is None


def test_lem_experiment_failure_is_one_line_on_stderr(tmp_path: Path) -> None:
    config_file = tmp_path / "missing.yml"
    config_file.write_text(json.dumps(config_data(tmp_path / "no-such-model")), encoding="utf-8")
    out = tmp_path / "out"

    completed = run_lem("experiment", str(config_file), "--out", str(out))

    assert completed.returncode != 0
    assert completed.stderr == f"error: model path {tmp_path / 'no-such-model'} does not exist\n"
    assert not (out / "result.json").exists()


def test_cli_import_loads_no_engine() -> None:
    code = (
        "import sys, llenergymeasure.cli, llenergymeasure.runner.experiment; "
        "print(sorted({'torch', 'transformers', 'vllm', 'tensorrt_llm'} & set(sys.modules)))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def eos_prone_model(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[int]]:
    """The tiny model with a token it emits early under greedy decoding made an extra EOS,
    so that requests in one batch end at different steps (a random model rarely emits
    its real EOS)."""
    folder = tmp_path_factory.mktemp("eos-prone")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(folder)
    first_prompt = read_prompt_set("builtin:short-prompts")[:1]
    generated = greedy_ids(model, tokenizer, first_prompt, max_new_tokens=4, eos_ids=[])
    eos_ids = sorted({tokenizer.eos_token_id, generated[0][3]})
    generation = GenerationConfig.from_pretrained(folder)
    generation.eos_token_id = eos_ids
    generation.save_pretrained(folder)
    return folder, eos_ids


def greedy_ids(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, eos_ids: list[int]
) -> list[list[int]]:
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    sequences = model.generate(
        **batch,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids or None,
        pad_token_id=tokenizer.pad_token_id,
    )
    return sequences[:, batch["input_ids"].shape[1] :].tolist()


def tokenizer_counts(model_dir: Path, prompts: list[str], eos_ids: list[int]) -> list[int]:
    """Independently: generate, cut each request after its first EOS, count its tokens."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    counts = []
    for row in greedy_ids(model, tokenizer, prompts, max_new_tokens=12, eos_ids=eos_ids):
        ends = [position for position, token in enumerate(row) if token in eos_ids]
        kept = row[: ends[0] + 1] if ends else row
        counts.append(len(tokenizer.convert_ids_to_tokens(kept)))
    return counts


def test_output_tokens_equal_the_tokenizer_count_on_generated_ids(
    eos_prone_model: tuple[Path, list[int]],
) -> None:
    model_dir, eos_ids = eos_prone_model
    prompts = read_prompt_set("builtin:short-prompts")[:3]
    config = tiny_config(model_dir, pytorch={"batch_size": 3})
    loaded = load_model(config)

    records = loaded.backend.generate(prompts, config).records
    loaded.backend.unload()

    expected = tokenizer_counts(model_dir, prompts, eos_ids)
    assert [r.output_tokens for r in records] == expected
    assert min(expected) < 12  # the EOS path ran: padding after it was not counted
    assert [len(r.itl_s) for r in records] == [n - 1 for n in expected]


def test_batched_requests_count_neither_prompt_nor_padding(tiny_model_dir: Path) -> None:
    prompts = [*read_prompt_set("builtin:long-prompts")[:2], "Hi."]
    config = tiny_config(
        tiny_model_dir,
        decoder={"max_new_tokens": 6, "min_new_tokens": 6},
        pytorch={"batch_size": 3},
    )
    loaded = load_model(config)

    records = loaded.backend.generate(prompts, config).records
    loaded.backend.unload()

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert [r.input_tokens for r in records] == [len(tokenizer(p).input_ids) for p in prompts]
    assert [r.output_tokens for r in records] == [6, 6, 6]
    for record in records:
        assert len(record.itl_s) == 5
        assert record.ttft_s is not None and 0 < record.ttft_s < record.latency_s
        assert record.latency_s == pytest.approx(record.ttft_s + sum(record.itl_s))


def test_count_output_tokens_stops_at_the_first_eos_of_each_row() -> None:
    eos, pad = 2, 0
    generated = torch.tensor(
        [
            [5, 6, 7, 8],  # no EOS: every generated token counts
            [5, eos, pad, pad],  # EOS included, padding after it excluded
            [eos, pad, pad, pad],
            [5, 9, eos, eos],  # pad == EOS models pad with EOS: only the first counts
        ]
    )
    assert count_output_tokens(generated, [eos]) == [4, 2, 1, 3]
    assert count_output_tokens(generated, [eos, 9]) == [4, 2, 1, 2]
    assert count_output_tokens(generated, []) == [4, 4, 4, 4]


def test_request_record_times_tokens_at_their_own_steps() -> None:
    record = request_record(10.0, [10.5, 10.75, 11.0, 11.5], input_tokens=7, output_tokens=3)
    assert (record.ttft_s, record.latency_s, record.itl_s) == (0.5, 1.0, [0.25, 0.25])
    assert (record.input_tokens, record.output_tokens) == (7, 3)


def test_generation_settings_greedy_and_seeded_sampling() -> None:
    section = PyTorchConfig(use_cache=False)
    greedy = generation_settings(DecoderConfig(max_new_tokens=8), section, 0, [2])
    assert greedy == {
        "max_new_tokens": 8,
        "do_sample": False,
        "pad_token_id": 0,
        "eos_token_id": [2],
        "use_cache": False,
    }
    decoder = DecoderConfig(temperature=0.7, top_p=0.9, top_k=0, min_new_tokens=2)
    sampling = generation_settings(decoder, section, 0, [2, 5])
    assert sampling["do_sample"] is True
    assert (sampling["temperature"], sampling["top_p"], sampling["top_k"]) == (0.7, 0.9, 0)
    assert sampling["min_new_tokens"] == 2


def test_a_loaded_model_serves_several_experiments(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(
        tiny_model_dir,
        measurement={"warmup_prompts": 0, "baseline_seconds": 0, "min_window_seconds": 0.2},
    )
    loaded = load_model(config)
    bigger_batch = tiny_config(
        tiny_model_dir,
        config_name="bs4",
        pytorch={"batch_size": 4},
        measurement=config.measurement.model_dump(),
    )

    first = run_experiment(config, tmp_path / "a", RunIdentity(), loaded=loaded)
    knob = {"knob": "sm_clock_mhz", "gpu_index": 0, "asked": 900, "applied": 900.0}
    knob |= {"supported_min": 345, "supported_max": 1980}
    second = run_experiment(
        bigger_batch, tmp_path / "b", RunIdentity(), loaded=loaded, gpu_knobs=[knob]
    )

    assert (first.timing.model_reused, first.timing.cold_start_method) == (False, "fresh_process")
    assert first.timing.load_seconds == loaded.load_seconds > 0
    assert (second.timing.model_reused, second.timing.load_seconds) == (True, 0.0)
    assert second.timing.cold_start_method is None
    assert second.config["pytorch"]["batch_size"] == 4  # run-time parameter, same load
    assert read_result(tmp_path / "b" / "result.json") == second
    assert first.gpu_knobs == [] and [k.model_dump() for k in second.gpu_knobs] == [knob]
    other_precision = tiny_config(tiny_model_dir, precision="bfloat16")
    with pytest.raises(ExperimentError, match="does not serve config 'tiny-cpu'"):
        measure_experiment(loaded, other_precision, RunIdentity())
    loaded.backend.unload()


def test_max_window_repeats_bounds_the_window_and_says_so(tiny_model_dir: Path) -> None:
    config = tiny_config(
        tiny_model_dir,
        dataset={"name": "builtin:short-prompts", "num_prompts": 2},
        measurement={
            "warmup_prompts": 0,
            "baseline_seconds": 0,
            "min_window_seconds": 600,
            "max_window_repeats": 2,
        },
    )
    loaded = load_model(config)
    result = measure_experiment(loaded, config, RunIdentity(exp_id="x"))
    loaded.backend.unload()

    assert (result.timing.window_repeats, result.tokens.requests) == (2, 4)
    assert any("short of min_window_seconds=600" in w for w in result.warnings)


def test_missing_model_path_and_missing_engine_are_named(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ExperimentError, match="model path /no/such/model does not exist"):
        load_model(tiny_config(Path("/no/such/model")))
    vllm_config = tiny_config(tiny_model_dir, backend="vllm", pytorch=None)
    with pytest.raises(ExperimentError, match="backend 'vllm' is not installed in this image"):
        run_experiment(vllm_config, tmp_path / "out", RunIdentity())
    assert not (tmp_path / "out").exists()


class OutOfMemoryError(RuntimeError):
    """Same name as torch.cuda.OutOfMemoryError, which the runner matches without torch."""


def test_describe_failure_is_one_line_and_names_the_cause(tiny_model_dir: Path) -> None:
    config = tiny_config(tiny_model_dir)
    oom = describe_failure(OutOfMemoryError("CUDA out of\nmemory. Tried 2 GiB"), config)
    assert oom.startswith(f"out of memory running {tiny_model_dir} (pytorch, float32): ")
    assert "\n" not in oom
    missing = describe_failure(ModuleNotFoundError("no vllm", name="vllm"), config)
    assert "'vllm' is missing" in missing
    assert describe_failure(ValueError("x" * 1000), config).endswith("...")


def test_write_result_replaces_atomically_and_names_an_unwritable_path(
    tmp_path: Path,
) -> None:
    out = tmp_path / "exp"
    write_result(out, make_result(energy_j=1.0))
    path = write_result(out, make_result(energy_j=2.0))

    assert read_result(path).energy.total_energy_j == 2.0
    assert [p.name for p in out.iterdir()] == ["result.json"]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(ExperimentError, match=f"cannot write {blocker / 'result.json'}: "):
        write_result(blocker, make_result())


def test_distribution_reports_percentiles_and_none_when_empty() -> None:
    stats = distribution([float(v) for v in range(1, 101)])
    assert (stats.mean, stats.p50, stats.n) == (50.5, 50.5, 100)
    assert stats.p90 == pytest.approx(90.1) and stats.p99 == pytest.approx(99.01)
    assert distribution([]).model_dump() == {
        "mean": None,
        "p50": None,
        "p90": None,
        "p99": None,
        "n": 0,
    }


def test_cpu_experiments_charge_no_gpu(tiny_model_dir: Path) -> None:
    assert experiment_gpus(tiny_config(tiny_model_dir), "cpu") == ([], [])


def test_baseline_cache_defaults_to_the_state_directory_of_the_result() -> None:
    state_out = Path("/lem/state/results/demo__tiny__c01")
    assert default_baseline_cache(state_out) == Path("/lem/state/baseline.json")
    assert default_baseline_cache(Path("/tmp/my-run")) is None
