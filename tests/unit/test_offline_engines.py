"""The vLLM and TensorRT-LLM wrappers never start CUDA in the worker process.

Both engines run the model in processes of their own. A `torch.cuda` call in the worker
would create a CUDA context on GPU 0 (about 0.5 GB) and fails when the GPU is in
EXCLUSIVE_PROCESS mode. A stand-in `torch` module records every `torch.cuda` call.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

from llenergymeasure.runner.backends import tensorrt, vllm
from llenergymeasure.runner.backends.offline_engine import OfflineEngine


class RecordingCuda:
    """`torch.cuda` stand-in: a GPU is there; `initialized` says whether this process uses it."""

    def __init__(self, initialized: bool) -> None:
        self.initialized = initialized
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return {"is_available": True, "is_initialized": self.initialized}.get(name)

        return call


def stand_in_torch(monkeypatch: pytest.MonkeyPatch, initialized: bool) -> RecordingCuda:
    cuda = RecordingCuda(initialized)
    distributed = SimpleNamespace(is_available=lambda: False, is_initialized=lambda: False)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda, distributed=distributed))
    monkeypatch.setitem(sys.modules, "torch.distributed", distributed)
    monkeypatch.setitem(sys.modules, "vllm", None)  # no vllm.distributed to tear down
    return cuda


def loaded_engines() -> list[OfflineEngine]:
    shut = SimpleNamespace(shutdown=lambda: None)
    vllm_llm = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=shut))
    return [
        vllm.LoadedVLLM(vllm_llm, SimpleNamespace(__version__="0.11.1")),
        tensorrt.LoadedTensorRT(shut, SimpleNamespace(__version__="1.0.0")),
    ]


@pytest.mark.parametrize("engine", loaded_engines(), ids=lambda e: e.package)
def test_synchronize_and_unload_make_no_cuda_call(
    monkeypatch: pytest.MonkeyPatch, engine: OfflineEngine
) -> None:
    cuda = stand_in_torch(monkeypatch, initialized=False)
    engine.synchronize()
    engine.unload()
    assert set(cuda.calls) <= {"is_initialized"}, cuda.calls


@pytest.mark.parametrize("engine", loaded_engines(), ids=lambda e: e.package)
def test_unload_frees_torch_cache_only_where_this_process_already_uses_cuda(
    monkeypatch: pytest.MonkeyPatch, engine: OfflineEngine
) -> None:
    cuda = stand_in_torch(monkeypatch, initialized=True)
    engine.unload()
    assert cuda.calls == ["is_initialized", "empty_cache"]


@pytest.mark.parametrize("engine", loaded_engines(), ids=lambda e: e.package)
def test_versions_name_the_engine_package(engine: OfflineEngine) -> None:
    versions = engine.versions()
    assert versions[engine.package] in ("0.11.1", "1.0.0")
    assert "torch" in versions  # the test venv has torch; read without importing it
