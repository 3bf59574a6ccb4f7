"""Decisions of the orchestration's modules, kept pure so that unit tests reach them."""
