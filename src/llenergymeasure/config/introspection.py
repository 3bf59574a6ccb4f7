"""What a config may contain, read from the pydantic models themselves.

The models in ``config.models`` are the single source of truth: the valid
parameters of each backend, the backend that owns a dotted key such as
``pytorch.batch_size`` and the keys every backend shares are all derived here
from ``model_fields`` and ``BACKEND_SECTIONS``. Nothing is listed by hand.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from llenergymeasure.config.models import BACKEND_SECTIONS, ExperimentConfig


def nested_model(annotation: object) -> type[BaseModel] | None:
    """The model class inside an annotation such as ``PyTorchConfig | None``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            found = nested_model(member)
            if found is not None:
                return found
    return None


def submodel_at(root: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model reached from `root` by following field names in `path`, or None.

    List indices (ints) in `path` are skipped, so a pydantic error location such as
    ``("configs", 0, "pytorch")`` can be used as it is.
    """
    model: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = nested_model(model.model_fields[part].annotation)
    return model


def _walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, bool]]:
    """Yield (dotted key, is_leaf) for every field of `model`, depth first."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        child = nested_model(field.annotation)
        yield key, child is None
        if child is not None:
            yield from _walk(child, f"{key}.")


@functools.cache
def known_keys() -> frozenset[str]:
    """Every dotted key of an experiment config: leaves and the sections that hold them."""
    return frozenset(key for key, _ in _walk(ExperimentConfig, ""))


def is_known_key(key: str) -> bool:
    return key in known_keys()


def backend_of(key: str) -> str | None:
    """The backend owning dotted `key` (``"vllm"`` for ``vllm.max_num_seqs``), None if shared."""
    head = key.split(".", 1)[0]
    return head if head in BACKEND_SECTIONS else None


def backends_with_parameter(name: str, excluding: str | None = None) -> list[str]:
    """The backends, other than `excluding`, whose section has a parameter called `name`."""
    return [
        backend
        for backend, section in BACKEND_SECTIONS.items()
        if backend != excluding and name in section.model_fields
    ]


def unknown_key_hint(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    """What is accepted where an unknown key `loc` (relative to `root`) was found.

    In a backend section it names that backend's parameters, and the backend the key
    belongs to when it is another backend's parameter.
    """
    parent, name = loc[:-1], loc[-1]
    model = submodel_at(root, parent)
    if model is None:
        return ""
    accepted = ", ".join(model.model_fields)
    backend = next((b for b, section in BACKEND_SECTIONS.items() if section is model), None)
    if backend is None:
        return f"allowed keys: {accepted}"
    owners = backends_with_parameter(str(name), excluding=backend)
    owned_by = f" ({name!s} is a {' and '.join(owners)} parameter)" if owners else ""
    return f"{backend} accepts: {accepted}{owned_by}"


def unknown_keys(
    root: type[BaseModel], data: Mapping[Any, Any]
) -> list[tuple[tuple[Any, ...], Any]]:
    """(location, value) of each key of `data` that `root` does not accept, at every level.

    For partial configs (a grid's base) that cannot be validated as a whole: only the
    keys are checked, and only inside mappings that stand for a model.
    """
    found: list[tuple[tuple[Any, ...], Any]] = []
    for key, value in data.items():
        if key not in root.model_fields:
            found.append(((key,), value))
            continue
        model = nested_model(root.model_fields[key].annotation)
        if model is not None and isinstance(value, Mapping):
            found.extend(((key, *loc), inner) for loc, inner in unknown_keys(model, value))
    return found
