"""Which compose service runs an experiment: one name, from plan to compose to manifest.

A backend whose engine version is a campaign axis (`vllm.version`) needs one service,
and one image, per version: two vLLM versions cannot share a container. The plan records
`service_of(config)` in each entry; the roles render one compose service per name, hand
the GPU over between them and run each entry in its own (docs/gpu.md, "Engine versions").

Standard library only: the controller calls it on a validated config's JSON when it plans,
the Ansible filters on the plan's plain entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The engine version of a versioned backend's plain service: the one its Dockerfile's base
# image carries (docker/Dockerfile.vllm), built by scripts/build-images.sh without
# --engine-version. vLLM 0.11.1 is ML.ENERGY v3's, kept for comparison with it.
PINNED_ENGINE_VERSIONS: dict[str, str] = {"vllm": "0.11.1"}


def unpinned_engine_version(config: Mapping[str, Any]) -> str | None:
    """The engine version `config` (an experiment config's JSON) asks for when it is not
    its backend's pinned one; None for the pinned one and for unversioned backends."""
    backend = str(config["backend"])
    if backend not in PINNED_ENGINE_VERSIONS:
        return None
    version = str((config.get(backend) or {}).get("version") or PINNED_ENGINE_VERSIONS[backend])
    return None if version == PINNED_ENGINE_VERSIONS[backend] else version


def service_of(config: Mapping[str, Any]) -> str:
    """The compose service that runs `config`: its backend's name for the pinned engine
    (`pytorch`, `vllm`, `tensorrt`), `<backend>-<version>` for another (`vllm-0.33.0`)."""
    version = unpinned_engine_version(config)
    return str(config["backend"]) if version is None else f"{config['backend']}-{version}"


def image_build_of(config: Mapping[str, Any], variant: str) -> list[str]:
    """scripts/build-images.sh's arguments for the image of `config`'s service, built as
    `variant` (pytorch-cpu, pytorch, vllm, tensorrt): --engine-version for an unpinned engine."""
    version = unpinned_engine_version(config)
    return ["--backend", variant, *(["--engine-version", version] if version else [])]
