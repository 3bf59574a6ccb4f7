"""What the vLLM and TensorRT-LLM wrappers share: engines that run in their own processes.

Both engines' offline `LLM` objects start worker processes that hold the GPU; this
process only submits prompts and collects outputs. So it must not touch CUDA itself:
`torch.cuda.synchronize()` here would create a CUDA context on GPU 0 (about 0.5 GB) and
fails when the GPU is in EXCLUSIVE_PROCESS compute mode, where the engine already holds it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import sys
from typing import Any

from llenergymeasure.errors import ExperimentError


class OfflineEngine:
    """A loaded engine (`llm`) and its package module; subclasses add `generate`."""

    device = "cuda"
    engine_name = "engine"  # for messages
    package = "engine"  # the key of its version in the result's environment

    def __init__(self, llm: Any, module: Any) -> None:
        self._llm: Any = llm
        self._module = module

    def _loaded(self) -> Any:
        if self._llm is None:
            raise ExperimentError(
                f"the {self.engine_name} engine was unloaded: load it again to generate"
            )
        return self._llm

    def synchronize(self) -> None:
        """Nothing to wait for: the engine's `generate` returns when every request is done."""

    def unload(self) -> None:
        """Shut the engine's processes down (they hold the GPU); a second call does nothing."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        self._shut_down(llm)
        del llm
        gc.collect()
        _release_cached_cuda_memory()

    def _shut_down(self, llm: Any) -> None:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        versions = {self.package: str(self._module.__version__)}
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions["torch"] = importlib.metadata.version("torch")
        return versions


def _release_cached_cuda_memory() -> None:
    """Free torch's cached blocks only where this process already uses CUDA (never start it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
