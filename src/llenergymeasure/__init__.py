"""LLenergyMeasure: energy measurement campaigns for LLM inference."""

__version__ = "0.1.0"
