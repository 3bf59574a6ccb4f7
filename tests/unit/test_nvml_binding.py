"""The NVML wrapper against the INSTALLED pynvml (nvidia-ml-py), without a GPU.

Every library function `measure/nvml.py` calls is found by parsing its source (the
string literals given to `_call` / `_device_call`, the names given to `_constant` and
the attributes it reads from the library), so a call added later is checked too: it
must exist in pynvml and accept the arguments it is given. The fake library used by
the other tests may only have names (and parameter counts) the real one has.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from pathlib import Path

import pynvml
import pytest
from fakes.fake_nvml import FakeNvml, check_names

from llenergymeasure.measure import nvml

NVML_SOURCE = Path(nvml.__file__)
# `_call(name, *args)` passes args as given; `_device_call(name, index, *args)` passes the
# index's handle in its place: either way the function receives len(args) - 1 arguments.
CALL_HELPERS = {"_call", "_device_call", "_checked_call"}


@dataclass(frozen=True)
class Use:
    name: str
    args: int  # positional arguments the library function receives
    line: int


def _names(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple):
        return [name for element in node.elts for name in _names(element)]
    if isinstance(node, ast.IfExp):  # "NVML_CLOCK_SM" if … else "NVML_CLOCK_MEM"
        return _names(node.body) + _names(node.orelse)
    raise AssertionError(f"line {node.lineno}: a library name must be a literal")


LIBRARY_NAMES = {"lib", "_library"}  # how nvml.py names the library object


def _wrapper_functions() -> list[ast.FunctionDef]:
    """nvml.py's functions, without the call helpers themselves (they forward a variable)."""
    tree = ast.parse(NVML_SOURCE.read_text())
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name not in CALL_HELPERS
    ]


def function_uses() -> list[Use]:
    uses = []
    for function in _wrapper_functions():
        for node in ast.walk(function):
            if not isinstance(node, ast.Call):
                continue
            assert not any(isinstance(arg, ast.Starred) for arg in node.args), node.lineno
            if isinstance(node.func, ast.Name) and node.func.id in CALL_HELPERS:
                args = len(node.args) - 1  # _device_call's index becomes the handle
                uses.extend(Use(name, args, node.lineno) for name in _names(node.args[0]))
            elif (
                isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in LIBRARY_NAMES
            ):
                uses.append(Use(node.func.attr, len(node.args), node.lineno))
    return uses


def constant_uses() -> list[str]:
    """Names read as constants, attributes read from the library object, and getattr(lib, …)."""
    names = []
    called = {use.name for use in function_uses()}
    for function in _wrapper_functions():
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "_constant":
                    names.extend(_names(node.args[0]))
                elif node.func.id == "getattr" and isinstance(node.args[1], ast.Constant):
                    names.append(node.args[1].value)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in LIBRARY_NAMES
                and node.attr not in called
            ):
                names.append(node.attr)
    return names


def test_the_parser_finds_the_wrapper_s_calls() -> None:
    found = {use.name for use in function_uses()}
    # a parser that found nothing would make the checks below pass vacuously
    assert {
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetComputeRunningProcesses_v2",
        "nvmlInit",
    } <= found
    assert {"NVML_FI_DEV_POWER_INSTANT", "NVMLLibraryMismatchError", "NVMLError"} <= set(
        constant_uses()
    )


@pytest.mark.parametrize("use", function_uses(), ids=lambda use: f"{use.name}@{use.line}")
def test_every_called_function_exists_and_takes_the_arguments(use: Use) -> None:
    function = getattr(pynvml, use.name, None)
    assert callable(function), f"the installed pynvml has no {use.name} (nvml.py:{use.line})"
    try:
        inspect.signature(function).bind(*[None] * use.args)
    except TypeError as exc:
        pytest.fail(f"nvml.py:{use.line}: {use.name} with {use.args} argument(s): {exc}")


@pytest.mark.parametrize("name", sorted(set(constant_uses())))
def test_every_constant_and_error_class_exists(name: str) -> None:
    assert hasattr(pynvml, name), f"the installed pynvml has no {name}"


def test_the_mismatch_error_is_not_an_nvml_error() -> None:
    # Why the wrapper catches it by name: `except NVMLError` alone lets it escape.
    assert not issubclass(pynvml.NVMLLibraryMismatchError, pynvml.NVMLError)


def test_the_fake_has_every_function_the_wrapper_calls() -> None:
    missing = sorted({use.name for use in function_uses()} - set(dir(FakeNvml)))
    assert missing == []


def test_the_fake_rejects_a_name_the_real_binding_lacks() -> None:
    with pytest.raises(TypeError, match="has no nvmlDeviceGetEnergyOfTheFuture"):

        class Invented(FakeNvml):
            def nvmlDeviceGetEnergyOfTheFuture(self, handle: int) -> int:
                return 0


def test_the_fake_rejects_a_parameter_count_the_real_binding_lacks() -> None:
    class WrongArity:
        def nvmlDeviceGetTemperature(self, handle: int) -> int:  # pynvml's takes a sensor
            return 0

    with pytest.raises(TypeError, match="nvmlDeviceGetTemperature"):
        check_names(WrongArity)
