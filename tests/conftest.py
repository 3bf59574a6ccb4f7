"""Shared fixtures. Tests never reach the Hugging Face hub: loads are local only."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before any test imports transformers, which reads them once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Ansible's module_utils replace sys.intern with an object, and torch._dynamo (which
# transformers imports lazily) fails to import once that is done. Tests of modules and
# plugins bring Ansible into the same process as the CPU backend tests: torch comes first.
# The product never has both in one process (Ansible on the controller, torch in images).
with contextlib.suppress(ImportError):  # a venv without the pytorch extra: nothing to protect
    import torch._dynamo  # noqa: F401


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama-style model + tokenizer in Hugging Face format (seed 0).

    Created once per session, in seconds; treat it as read-only (copy it to modify).
    """
    from llenergymeasure.runner.tiny_model import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("tiny-model")).path


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path, for Unix sockets (paths are limited to 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="lemw-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
