"""The backends' engine arguments exist in the pinned engines' real source.

tests/fixtures/engines/*.json are the output of scripts/inspect-engines.py over the
engines' source, read without importing them (vLLM: the PyPI wheels; TensorRT-LLM: its
GitHub source, see each file's "source"). A parameter the engine renames or drops makes
these tests fail, instead of a campaign on a GPU host.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fixtures.engine_contracts import every_key_config, fixture, names
from fixtures.load import load_module
from pydantic import create_model

from llenergymeasure.config.models import (
    VLLM_KEYS_GONE_IN,
    VLLM_VERSIONS,
    TensorRTConfig,
    VLLMConfig,
)
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends import tensorrt, vllm

ROOT = Path(__file__).resolve().parents[2]
PINNED_VLLM = "0.11.1"  # ML.ENERGY v3's version, kept for comparison with it
# The pinned 1.0.0's contract, from 1.0.0rc4 source (the 1.0.0 wheel is on pypi.nvidia.com
# only). Issue 18 asks for a 1.2 fixture taken from 1.2 source: not made, because no whole
# 1.2 source tree is reachable from here (looked for on 2026-12-04):
# - PyPI's tensorrt-llm 1.2.0 and 1.2.1 are stub sdists (build requirement wheel-stub) that
#   download the wheel from NVIDIA's index; PyPI has no tensorrt-llm wheel of 1.2;
# - NVIDIA/TensorRT-LLM is a 2.5 GB snapshot, its forks 1.0-1.9 GB: over the 500 MB that
#   can be fetched;
# - the code index stores a file at the commits that changed it, and lists one commit per
#   file: no commit found holds every file read. version.py says 1.2.0rc2 at b35ac1b6
#   (sampling_params.py is there too, llm_args.py, llmapi/llm.py and commands/serve.py are
#   not) and 1.2.0rc1 at mikeiovine/TensorRT-LLM@666d034d (llm_args.py is not); the
#   commits holding llm_args.py (fcd3f316), llm.py and serve.py (4c05a748, 00209af1) hold
#   no version.py, so their version cannot be told.
# Where the source is at hand: scripts/inspect-engines.py /path/to/TensorRT-LLM --source
# "git tag v1.2.x" > tests/fixtures/engines/tensorrt_llm-1.2.x.json, and add its name here:
# every TensorRT-LLM test below runs over each fixture listed.
TENSORRT_FIXTURE = "tensorrt_llm-1.0.0rc4.json"  # the pinned version's
TENSORRT_FIXTURES = (TENSORRT_FIXTURE,)


def script() -> ModuleType:
    return load_module(ROOT / "scripts/inspect-engines.py", "inspect_engines")


DECODERS = [
    {"temperature": 0.0},
    {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_new_tokens": 2, "seed": 5},
]


EVERY_VLLM_KEY = {
    "max_num_seqs": 8,
    "max_num_batched_tokens": 4096,
    "max_model_len": 2048,
    "enable_chunked_prefill": True,
    "quantization": "fp8",
    "block_size": 16,
    "swap_space": 4.0,
}


def engine_args_class(version: str) -> type:
    """A dataclass with the fields of that version's real EngineArgs (from its wheel)."""
    fields = names(fixture(f"vllm-{version}.json"), "engine_args")
    return dataclasses.make_dataclass("EngineArgs", [(name, Any, None) for name in fields])


@pytest.mark.parametrize("version", VLLM_VERSIONS)
def test_vllm_engine_args_are_engine_args_fields(version: str) -> None:
    args = vllm.engine_args(every_key_config("vllm", EVERY_VLLM_KEY))
    # every section key is translated; `version` chooses the service, it is no engine argument
    assert set(VLLMConfig.model_fields) - {"version"} <= set(args)
    # vllm.LLM(**kwargs) hands every keyword on to EngineArgs
    report = fixture(f"vllm-{version}.json")
    assert report["symbols"]["llm_init"]["var_keyword"] is True
    unknown = set(args) - names(report, "engine_args") - names(report, "llm_init")
    assert unknown == VLLM_KEYS_GONE_IN.get(version, set())


def test_every_vllm_version_has_a_fixture_read_from_its_wheel() -> None:
    assert VLLM_VERSIONS[0] == PINNED_VLLM
    for version in VLLM_VERSIONS:
        assert fixture(f"vllm-{version}.json")["version"] == version


def test_a_key_gone_from_the_config_s_vllm_version_is_refused_at_validation() -> None:
    with pytest.raises(ValueError, match=r"swap_space: vLLM 0\.33\.0's EngineArgs has no"):
        VLLMConfig(version="0.33.0", swap_space=4.0)
    assert VLLMConfig(version="0.11.1", swap_space=4.0).swap_space == 4.0


@pytest.mark.parametrize("version", VLLM_VERSIONS)
def test_a_setting_the_installed_vllm_lacks_is_refused_by_name(version: str) -> None:
    installed = engine_args_class(version)
    defaults = vllm.engine_args(every_key_config("vllm", {}))
    vllm.check_engine_args(defaults, installed, version)  # what every version takes
    every_key = vllm.engine_args(every_key_config("vllm", EVERY_VLLM_KEY))
    if version not in VLLM_KEYS_GONE_IN:
        vllm.check_engine_args(every_key, installed, version)
        return
    with pytest.raises(ExperimentError, match=rf"vLLM {version}'s EngineArgs has no swap_space"):
        vllm.check_engine_args(every_key, installed, version)


@pytest.mark.parametrize("version", VLLM_VERSIONS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_vllm_sampling_params_are_sampling_params_fields(
    decoder: dict[str, Any], version: str
) -> None:
    params = vllm.sampling_params(every_key_config("vllm", {}, decoder=decoder))
    assert set(params) <= names(fixture(f"vllm-{version}.json"), "sampling_params")


@pytest.mark.parametrize("version", VLLM_VERSIONS)
def test_each_vllm_version_fills_request_metrics_with_the_fields_read(version: str) -> None:
    report = fixture(f"vllm-{version}.json")
    assert report["version"] == version and report["source"].startswith("PyPI wheel")
    assert "metrics" in names(report, "output_processor_request_output")
    assert set(vllm.STATS_FIELDS) <= names(report, "request_state_stats")


def test_vllm_0_11_0_never_fills_request_metrics() -> None:
    """The finding that set the pin: 0.11.0 builds RequestOutput without `metrics`."""
    report = fixture("vllm-0.11.0.json")
    assert "metrics" in set(report["symbols"]["request_output_init"]["names"])
    assert "metrics" not in names(report, "output_processor_request_output")


EVERY_TRT_KEY = {
    "tensor_parallel_size": 2,
    "max_batch_size": 8,
    "max_num_tokens": 4096,
    "max_seq_len": 2048,
    "max_input_len": 1024,
    "kv_cache_free_gpu_memory_fraction": 0.8,
    "enable_block_reuse": True,
}


@pytest.mark.parametrize("trt_fixture", TENSORRT_FIXTURES)
def test_tensorrt_llm_args_are_torch_llm_args_fields(trt_fixture: str) -> None:
    section = EVERY_TRT_KEY
    report = fixture(trt_fixture)
    # The PyTorch flow's LLM takes TorchLlmArgs; a prebuilt engine's LLM takes TrtLlmArgs.
    for extra, llm_class in (({}, "torch_llm_args"), ({"engine_dir": "/e/m"}, "trt_llm_args")):
        args = tensorrt.llm_args(every_key_config("tensorrt", {**section, **extra}))
        assert set(args) <= names(report, llm_class)
        assert set(args["kv_cache_config"]) <= names(report, "kv_cache_config")
    assert "quant_config" not in names(report, "torch_llm_args")  # why quantization is refused


def llm_args_model(report: dict[str, Any], symbol: str, drop: str = "") -> type:
    """A pydantic model with the fields of the fixture's TorchLlmArgs / TrtLlmArgs."""
    fields = {name: (Any, None) for name in names(report, symbol) if name != drop}
    return create_model(report["symbols"][symbol]["symbol"], **fields)


@pytest.mark.parametrize("trt_fixture", TENSORRT_FIXTURES)
def test_the_backend_s_llm_check_passes_the_release_s_own_fields(trt_fixture: str) -> None:
    report = fixture(trt_fixture)
    for extra, symbol in (({}, "torch_llm_args"), ({"engine_dir": "/e/m"}, "trt_llm_args")):
        args = tensorrt.llm_args(every_key_config("tensorrt", {**EVERY_TRT_KEY, **extra}))
        tensorrt.check_llm_args(args, llm_args_model(report, symbol), report["version"])


@pytest.mark.parametrize("trt_fixture", TENSORRT_FIXTURES)
def test_an_llm_argument_the_release_lacks_is_refused_by_name(
    trt_fixture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release without `max_input_len` (as if renamed): refused before the LLM is made."""
    report = fixture(trt_fixture)
    llm_args = ModuleType("tensorrt_llm.llmapi.llm_args")
    llm_args.TorchLlmArgs = llm_args_model(report, "torch_llm_args", drop="max_input_len")  # type: ignore[attr-defined]
    llmapi = ModuleType("tensorrt_llm.llmapi")
    llmapi.llm_args = llm_args  # type: ignore[attr-defined]
    package = ModuleType("tensorrt_llm")
    package.__version__ = report["version"]  # type: ignore[attr-defined]
    package.llmapi = llmapi  # type: ignore[attr-defined]
    made: list[dict[str, Any]] = []
    package.LLM = lambda **kwargs: made.append(kwargs)  # type: ignore[attr-defined]
    for name, module in (("tensorrt_llm", package), ("tensorrt_llm.llmapi", llmapi)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi.llm_args", llm_args)
    version = re.escape(report["version"])
    with pytest.raises(
        ExperimentError, match=rf"TensorRT-LLM {version}'s TorchLlmArgs has no max_input_len"
    ):
        tensorrt.load(every_key_config("tensorrt", EVERY_TRT_KEY))
    assert made == []


def test_every_tensorrt_section_key_reaches_the_engine() -> None:
    translated = {*tensorrt.ENGINE_LIMITS, *tensorrt.KV_CACHE_FIELDS}
    translated |= {"tensor_parallel_size", "pipeline_parallel_size", "engine_dir"}
    assert set(TensorRTConfig.model_fields) - translated == {"quantization"}  # refused


@pytest.mark.parametrize("trt_fixture", TENSORRT_FIXTURES)
@pytest.mark.parametrize("decoder", DECODERS)
def test_tensorrt_sampling_params_are_sampling_params_fields(
    decoder: dict[str, Any], trt_fixture: str
) -> None:
    params = tensorrt.sampling_params(every_key_config("tensorrt", {}, decoder=decoder))
    assert set(params) <= names(fixture(trt_fixture), "sampling_params")


def test_the_fixtures_are_of_the_pinned_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["vllm"] == [f"vllm=={PINNED_VLLM}"]
    assert fixture(f"vllm-{PINNED_VLLM}.json")["version"] == PINNED_VLLM
    dockerfile = (ROOT / "docker" / "Dockerfile.vllm").read_text()
    assert f"ARG BASE_IMAGE=vllm/vllm-openai:v{PINNED_VLLM}\n" in dockerfile
    # TensorRT-LLM 1.0.0's wheel is on pypi.nvidia.com only: the fixture is its 1.0.0rc4 source
    trt_pin = re.fullmatch(r"tensorrt-llm==(\S+)", extras["tensorrt"][0])
    assert trt_pin is not None and extras["tensorrt"][0] == tensorrt.PINNED_PACKAGE
    assert fixture(TENSORRT_FIXTURE)["version"].startswith(trt_pin.group(1))
    dockerfile = (ROOT / "docker" / "Dockerfile.tensorrt").read_text()
    assert f"tensorrt-llm/release:{trt_pin.group(1)}\n" in dockerfile


SAMPLE_SOURCE = """
from dataclasses import dataclass, field
from typing import ClassVar

class Base:
    model: str
    _private: int = 0

@dataclass
class EngineArgs(Base):
    dtype: str = "auto"
    kind: ClassVar[str] = "x"
    _hidden: list = field(default=None, init=False)
    derived: int = field(default=0, init=False)

    @property
    def quant_config(self) -> int:
        return 1

class LLM:
    def __init__(self, model, *, seed=0, **kwargs):
        pass

class RequestOutput:
    def __init__(self, request_id, metrics=None):
        pass

def make():
    return RequestOutput(request_id="a", metrics=None)

def make_again():
    return RequestOutput(request_id="b", finished=True)
"""


# Every vLLM file the script reads but sampling_params.py; stats.py lacks RequestStateStats.
SAMPLE_FILES = (
    "engine/arg_utils.py",
    "entrypoints/llm.py",
    "outputs.py",
    "v1/engine/output_processor.py",
    "v1/metrics/stats.py",
)


def test_the_script_reads_fields_params_and_call_keywords_from_a_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "vllm-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("vllm-9.9.9.dist-info/METADATA", "Name: vllm\nVersion: 9.9.9\n")
        for file in SAMPLE_FILES:
            archive.writestr(f"vllm/{file}", SAMPLE_SOURCE)
    report = script().inspect_source(wheel)
    assert report["engine"] == "vllm" and report["version"] == "9.9.9"
    symbols = report["symbols"]
    assert symbols["engine_args"]["names"] == ["model", "dtype"]
    assert symbols["llm_init"] == {
        "file": "vllm/entrypoints/llm.py",
        "symbol": "LLM.__init__",
        "kind": "params",
        "names": ["model", "seed"],
        "var_keyword": True,
    }
    assert symbols["request_output_init"]["names"] == ["request_id", "metrics"]
    assert symbols["output_processor_request_output"]["names"] == [
        "finished",
        "metrics",
        "request_id",
    ]
    assert symbols["sampling_params"]["missing"] == "file not found"
    assert "RequestStateStats not found" in symbols["request_state_stats"]["missing"]


def test_the_script_reads_a_source_directory(tmp_path: Path) -> None:
    package = tmp_path / "tensorrt_llm"
    (package / "llmapi").mkdir(parents=True)
    (package / "version.py").write_text('__version__ = "1.0.0"\n')
    (package / "llmapi" / "llm_args.py").write_text(
        "class KvCacheConfig:\n    enable_block_reuse: bool = True\n"
    )
    report = script().inspect_source(tmp_path, "a checkout")
    assert (report["engine"], report["version"], report["source"]) == (
        "tensorrt_llm",
        "1.0.0",
        "a checkout",
    )
    assert report["symbols"]["kv_cache_config"]["names"] == ["enable_block_reuse"]
    assert "missing" in report["symbols"]["torch_llm_args"]


SERVE_SOURCE = """
import click

@click.group()
def main():
    pass

@click.command("serve")
@click.argument("model", type=str)
@click.option("--host", type=str, default="localhost")
@click.option("--tensor_parallel_size", "--tp_size", type=int, default=1)
@click.option("--config", "--extra_llm_api_options", "extra_llm_api_options", default=None)
@click.option("-c", "--config_file", default=None)
@common_llm_options
def serve(model, host, tensor_parallel_size, extra_llm_api_options, config_file):
    pass

@click.command("grpc")
@click.option("--grpc_only")
def grpc(grpc_only):
    pass
"""


def test_the_script_reads_the_serve_command_s_click_options(tmp_path: Path) -> None:
    commands = tmp_path / "tensorrt_llm" / "commands"
    commands.mkdir(parents=True)
    (commands / "serve.py").write_text(SERVE_SOURCE)
    entry = script().inspect_source(tmp_path)["symbols"]["serve_cli"]
    assert entry == {
        "file": "tensorrt_llm/commands/serve.py",
        "symbol": "serve",
        "kind": "click_options",
        # aliases kept, the parameter name (no dash) left out, other commands' options too
        "names": [
            "--host",
            "--tensor_parallel_size",
            "--tp_size",
            "--config",
            "--extra_llm_api_options",
            "-c",
            "--config_file",
        ],
        "arguments": ["model"],
        "other_decorators": ["common_llm_options"],  # options it adds are not seen
    }
    (commands / "serve.py").write_text("import click\n")
    missing = script().inspect_source(tmp_path)["symbols"]["serve_cli"]["missing"]
    assert missing == "function serve not found"


def fake_vllm(version: str, started: dict[str, Any]) -> dict[str, ModuleType]:
    """sys.modules entries of a vLLM `version` whose EngineArgs has its wheel's fields."""
    arg_utils = ModuleType("vllm.engine.arg_utils")
    arg_utils.EngineArgs = engine_args_class(version)  # type: ignore[attr-defined]
    package = ModuleType("vllm")
    package.__version__ = version  # type: ignore[attr-defined]
    package.LLM = lambda **kwargs: started.update(kwargs)  # type: ignore[attr-defined]
    engine = ModuleType("vllm.engine")
    return {"vllm": package, "vllm.engine": engine, "vllm.engine.arg_utils": arg_utils}


def test_load_starts_the_engine_of_the_config_s_vllm_version_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: dict[str, Any] = {}
    for name, module in fake_vllm("0.33.0", started).items():
        monkeypatch.setitem(sys.modules, name, module)

    with pytest.raises(
        ExperimentError, match=r"vllm\.version is 0\.11\.1 but this service runs vLLM 0\.33\.0"
    ):
        vllm.load(every_key_config("vllm", {}))
    assert started == {}
    vllm.load(every_key_config("vllm", {"version": "0.33.0", "max_num_seqs": 8}))
    assert started["max_num_seqs"] == 8 and "version" not in started
