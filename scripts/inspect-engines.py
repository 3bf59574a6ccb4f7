#!/usr/bin/env python3
"""Print, as JSON, the parameters of the engine classes that LLenergyMeasure's argument
translation uses, read from an engine's source WITHOUT importing it (no GPU, no CUDA).

    scripts/inspect-engines.py vllm-0.11.1-cp38-abi3-manylinux1_x86_64.whl
    scripts/inspect-engines.py /path/to/TensorRT-LLM --source "git tag v1.0.0"

The input is a wheel (a zip) or a source directory holding the package directory
(`vllm/` or `tensorrt_llm/`). For each symbol below the output lists:
- "fields": the annotated class attributes a dataclass / pydantic model / msgspec struct
  takes as keyword arguments (own and inherited from classes of the same file; private
  `_names`, `ClassVar`s and `field(init=False)` left out);
- "params": a function's parameter names (and whether it takes **kwargs);
- "call_keywords": the keywords the file passes where it calls that name;
- "click_options": a click command's option flags ("--tp_size", "-c"), in declared order,
  and its positional "arguments"; "other_decorators" lists the decorators that are not
  click.option/argument/command (they may add options this reading cannot see).
tests/fixtures/engines/*.json hold this output for the pinned engine versions, and
tests/unit/test_engine_signatures.py checks the backends' arguments against them.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

# engine package -> {symbol key: (file in the package, symbol, kind)}
TARGETS: dict[str, dict[str, tuple[str, str, str]]] = {
    "vllm": {
        "engine_args": ("vllm/engine/arg_utils.py", "EngineArgs", "fields"),
        "llm_init": ("vllm/entrypoints/llm.py", "LLM.__init__", "params"),
        "sampling_params": ("vllm/sampling_params.py", "SamplingParams", "fields"),
        "request_output_init": ("vllm/outputs.py", "RequestOutput.__init__", "params"),
        "request_state_stats": ("vllm/v1/metrics/stats.py", "RequestStateStats", "fields"),
        "output_processor_request_output": (
            "vllm/v1/engine/output_processor.py",
            "RequestOutput",
            "call_keywords",
        ),
    },
    "tensorrt_llm": {
        "torch_llm_args": ("tensorrt_llm/llmapi/llm_args.py", "TorchLlmArgs", "fields"),
        "trt_llm_args": ("tensorrt_llm/llmapi/llm_args.py", "TrtLlmArgs", "fields"),
        "kv_cache_config": ("tensorrt_llm/llmapi/llm_args.py", "KvCacheConfig", "fields"),
        "sampling_params": ("tensorrt_llm/sampling_params.py", "SamplingParams", "fields"),
        # `trtllm-serve serve`: the options a server-mode command line may use
        "serve_cli": ("tensorrt_llm/commands/serve.py", "serve", "click_options"),
    },
}


class Source:
    """Text files of a wheel or a source directory, by package-relative path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None

    def names(self) -> list[str]:
        if self._zip is not None:
            return self._zip.namelist()
        return [str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()]

    def read(self, name: str) -> str | None:
        if self._zip is not None:
            try:
                return self._zip.read(name).decode()
            except KeyError:
                return None
        file = self.path / name
        return file.read_text() if file.is_file() else None


def engine_of(source: Source) -> str:
    tops = {name.split("/", 1)[0] for name in source.names()}
    found = [engine for engine in TARGETS if engine in tops]
    if len(found) != 1:
        raise SystemExit(f"{source.path}: expected one of {sorted(TARGETS)} at the top level")
    return found[0]


def version_of(source: Source, engine: str) -> str | None:
    """The dist-info Version of a wheel, else `__version__` of the package's version.py."""
    for name in source.names():
        if name.endswith(".dist-info/METADATA"):
            match = re.search(r"^Version: (\S+)$", source.read(name) or "", re.MULTILINE)
            if match:
                return match.group(1)
    text = source.read(f"{engine}/version.py")
    if text is not None:
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            ):
                return str(node.value.value)
    return None


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _is_classvar(annotation: ast.expr) -> bool:
    target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    return ast.unparse(target).split(".")[-1] == "ClassVar"


def _init_false(value: ast.expr | None) -> bool:
    return isinstance(value, ast.Call) and any(
        kw.arg == "init" and isinstance(kw.value, ast.Constant) and kw.value.value is False
        for kw in value.keywords
    )


def class_fields(tree: ast.Module, name: str) -> list[str]:
    """Keyword fields of class `name`: bases of the same file first, then its own."""
    classes = _classes(tree)
    if name not in classes:
        raise LookupError(f"class {name} not found")
    node = classes[name]
    fields: list[str] = []
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            fields += class_fields(tree, base.id)
    for statement in node.body:
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and not statement.target.id.startswith("_")
            and not _is_classvar(statement.annotation)
            and not _init_false(statement.value)
        ):
            fields.append(statement.target.id)
    return list(dict.fromkeys(fields))


def function_params(tree: ast.Module, dotted: str) -> dict[str, Any]:
    class_name, function_name = dotted.split(".")
    for statement in _classes(tree)[class_name].body:
        if isinstance(statement, ast.FunctionDef) and statement.name == function_name:
            args = statement.args
            names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
            return {
                "names": [n for n in names if n not in ("self", "cls")],
                "var_keyword": args.kwarg is not None,
            }
    raise LookupError(f"function {dotted} not found")


def call_keywords(tree: ast.Module, callee: str) -> list[str]:
    """Keywords of every call of `callee` in the file (sorted, deduplicated)."""
    keywords: set[str] = set()
    calls = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == callee:
            calls += 1
            keywords.update(kw.arg for kw in node.keywords if kw.arg is not None)
    if not calls:
        raise LookupError(f"no call of {callee} found")
    return sorted(keywords)


def _string_args(call: ast.Call) -> list[str]:
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def click_options(tree: ast.Module, name: str) -> dict[str, Any]:
    """Option flags and arguments of the module-level click command function `name`."""
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef) and statement.name == name:
            break
    else:
        raise LookupError(f"function {name} not found")
    options: list[str] = []
    arguments: list[str] = []
    others: list[str] = []
    # decorators apply bottom-up, but click lists options in the order they are written
    for decorator in statement.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        kind = ast.unparse(call.func if call else decorator).split(".")[-1]
        if call is not None and kind == "option":
            # a string without a leading dash is the parameter's name, not a flag
            options += [s for s in _string_args(call) if s.startswith("-")]
        elif call is not None and kind == "argument":
            arguments += _string_args(call)[:1]
        elif kind != "command":
            others.append(ast.unparse(decorator))
    return {"names": options, "arguments": arguments, "other_decorators": others}


def inspect_source(path: Path, label: str | None = None) -> dict[str, Any]:
    source = Source(path)
    engine = engine_of(source)
    symbols: dict[str, Any] = {}
    for key, (file, symbol, kind) in TARGETS[engine].items():
        text = source.read(file)
        entry: dict[str, Any] = {"file": file, "symbol": symbol, "kind": kind}
        if text is None:
            entry["missing"] = "file not found"
        else:
            tree = ast.parse(text)
            try:
                if kind == "fields":
                    entry["names"] = class_fields(tree, symbol)
                elif kind == "params":
                    entry.update(function_params(tree, symbol))
                elif kind == "click_options":
                    entry.update(click_options(tree, symbol))
                else:
                    entry["names"] = call_keywords(tree, symbol)
            except LookupError as exc:
                entry["missing"] = str(exc)
        symbols[key] = entry
    return {
        "engine": engine,
        "version": version_of(source, engine),
        "source": label or path.name,
        "symbols": symbols,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a wheel (.whl) or a source directory")
    parser.add_argument("--source", help="how the input was obtained (recorded as 'source')")
    args = parser.parse_args(argv)
    report = inspect_source(args.path, args.source)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 1 if any("missing" in entry for entry in report["symbols"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
