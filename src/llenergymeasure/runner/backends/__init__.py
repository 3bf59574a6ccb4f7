"""Inference backends. Each module imports its engine lazily, inside functions."""
