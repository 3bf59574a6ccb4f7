"""Fixtures shared by the unit tests."""

from fixtures.controllers import fake_controller_script, start_controller  # noqa: F401
from fixtures.settle import instant_settle  # noqa: F401
