"""Inference backends, imported only when a config uses them.

`load_backend(config)` imports only the configured backend's module, so an image
holding one engine never needs the others. Every backend module exposes
`load(config) -> LoadedBackend` (see base.py). The vLLM and TensorRT-LLM modules
import their engine inside functions, so that their argument translation is
testable without the engine; the PyTorch module imports torch at its top.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from llenergymeasure.config.models import ExperimentConfig
from llenergymeasure.errors import ExperimentError
from llenergymeasure.runner.backends.base import LoadedBackend

BACKEND_MODULES: dict[str, str] = {
    "pytorch": "llenergymeasure.runner.backends.pytorch",
    "vllm": "llenergymeasure.runner.backends.vllm",
    "tensorrt": "llenergymeasure.runner.backends.tensorrt",
}

# The package extra that installs each backend's engine.
BACKEND_EXTRAS: dict[str, str] = {
    "pytorch": "llenergymeasure[pytorch]",
    "vllm": "llenergymeasure[vllm]",
    "tensorrt": "llenergymeasure[tensorrt]",
}


def import_backend(backend: str) -> ModuleType:
    """The backend's module, engine imported; a missing engine is an ExperimentError.

    The engine import is here, not in the module's `load`: a cold `import vllm` takes
    minutes, and every backend's `load_seconds` must count the load alone (the import is
    `import_seconds`). A module that imports its engine lazily has `import_engine()`."""
    try:
        module = importlib.import_module(BACKEND_MODULES[backend])
    except ModuleNotFoundError as exc:
        raise ExperimentError(not_installed_message(backend, exc.name)) from exc
    if hasattr(module, "import_engine"):
        module.import_engine()
    return module


def load_backend(config: ExperimentConfig, module: ModuleType | None = None) -> LoadedBackend:
    """Load the config's model with its backend (`module`: from `import_backend`)."""
    module = module or import_backend(config.backend)
    try:
        return module.load(config)
    except ModuleNotFoundError as exc:  # engines may import parts of themselves lazily
        raise ExperimentError(not_installed_message(config.backend, exc.name)) from exc


def not_installed_message(backend: str, package: str | None) -> str:
    return (
        f"backend {backend!r} is not installed in this image: "
        f"Python package {package or 'unknown'!r} is missing (install {BACKEND_EXTRAS[backend]})"
    )


def init_field_names(engine_class: Any) -> set[str] | None:
    """The keyword arguments an engine's dataclass or pydantic model takes (a pydantic
    field by its name or its alias); None for anything else."""
    if dataclasses.is_dataclass(engine_class):
        return {field.name for field in dataclasses.fields(engine_class) if field.init}
    fields = getattr(engine_class, "model_fields", None)
    if not isinstance(fields, dict):
        return None
    aliases = {getattr(info, "alias", None) for info in fields.values()}
    return set(fields) | {alias for alias in aliases if isinstance(alias, str)}


def refuse_unknown_fields(
    params: dict[str, Any], dataclass_type: Any, what: str, hint: str = ""
) -> None:
    """ExperimentError when `params` holds a name the installed engine's dataclass (or
    pydantic model) does not take: the engine would raise a bare TypeError, or (a setting
    dropped) measure something else without a word. Neither: nothing to check here, the
    call itself rejects."""
    names = init_field_names(dataclass_type)
    if names is None:
        return
    unknown = sorted(set(params) - names)
    if unknown:
        raise ExperimentError(f"the installed {what} has no {', '.join(unknown)}{hint}")
