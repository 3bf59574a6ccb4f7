"""Hostile or wrong campaign input: refused before anything runs, and nothing written.

Each case goes through the `lem` commands (in process, typer's runner) and checks the
message names the file, the key path and the bad value, on one line per error, and
that the output directory a command was given stays absent.
"""

from __future__ import annotations

import copy
import os
import re
import resource
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import llenergymeasure.config.grid as grid_module
from llenergymeasure.cli import app
from llenergymeasure.config.loader import MAX_FILE_BYTES, load_campaign, load_experiment
from llenergymeasure.config.messages import MAX_LINE_CHARS, MAX_MESSAGE_LINES
from llenergymeasure.errors import ConfigError

runner = CliRunner()

CONFIG: dict[str, Any] = {
    "config_name": "tiny-bs1",
    "backend": "pytorch",
    "model": {"path": "/models/tiny"},
    "pytorch": {"batch_size": 1},
}
CAMPAIGN: dict[str, Any] = {"campaign_name": "demo", "configs": [CONFIG]}


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def edited(data: dict[str, Any], location: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `value` set at dotted `location` (``configs.0.model.path``)."""
    result = copy.deepcopy(data)
    *parents, leaf = location.split(".")
    node: Any = result
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[int(leaf) if leaf.isdigit() else leaf] = value
    return result


def key_path(location: str) -> str:
    """How messages write a location: ``configs.0.model`` -> ``configs[0].model``."""
    return re.sub(r"\.(\d+)", r"[\1]", location)


def grid_campaign(base: dict[str, Any], vary: dict[str, list[Any]]) -> dict[str, Any]:
    return {"campaign_name": "demo", "grid": {"base": base, "vary": vary}}


def refused(tmp_path: Path, campaign: dict[str, Any]) -> tuple[Path, list[str]]:
    """Run `lem validate` and `lem plan --out` on `campaign`; both must refuse it alike.

    Returns the campaign file and validate's error lines (without the `error: ` prefix).
    """
    path = write_yaml(tmp_path / "campaign.yml", campaign)
    out_dir = tmp_path / "results"
    validated = runner.invoke(app, ["validate", str(path)])
    planned = runner.invoke(app, ["plan", str(path), "--out", str(out_dir / "plan.json")])
    assert (validated.exit_code, planned.exit_code) == (2, 2), validated.stdout
    assert validated.stdout == "" and planned.stdout == ""
    assert planned.stderr == validated.stderr
    assert not out_dir.exists()
    lines = validated.stderr.splitlines()
    assert lines[0].startswith("error: ")
    return path, [lines[0].removeprefix("error: "), *lines[1:]]


# -- names that become paths ------------------------------------------------------------

HOSTILE_NAMES = [
    "a/b",
    "../up",
    "..",
    "a..b",
    "tiny bs1",
    "x;rm -rf ~",
    "$(touch pwned)",
    "`touch pwned`",
    "a|b",
    "a&b",
    "a'b",
    'a"b',
    "a\nb",
    "tiny\n",  # a regex anchored with `$` would let the trailing newline through
    "a\x00b",
    "tiny\u2215bs1",  # DIVISION SLASH, a lookalike of '/'
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=ascii)
@pytest.mark.parametrize("location", ["campaign_name", "configs.0.config_name"])
def test_a_name_that_is_not_path_safe_is_refused_on_one_line(
    tmp_path: Path, location: str, name: str
) -> None:
    path, lines = refused(tmp_path, edited(CAMPAIGN, location, name))
    assert lines == [lines[0]]  # repr() keeps a newline in the value from splitting it
    assert lines[0].startswith(f"{path}: {key_path(location)}: ")
    assert repr(name) in lines[0]


# -- unknown keys at every level --------------------------------------------------------

VLLM_CONFIG = {**CONFIG, "backend": "vllm", "pytorch": None, "vllm": {"max_num_seqs": 8}}
TENSORRT_CONFIG = {
    **CONFIG,
    "backend": "tensorrt",
    "precision": "float16",
    "pytorch": None,
    "tensorrt": {},
}


GRID = grid_campaign(CONFIG, {"pytorch.batch_size": [1, 2]})
UNKNOWN_KEY_PLACES = [
    (CAMPAIGN, ""),
    (CAMPAIGN, "execution"),
    (CAMPAIGN, "health_check"),
    (CAMPAIGN, "cold_start"),
    (CAMPAIGN, "failures"),
    (CAMPAIGN, "configs.0"),
    (CAMPAIGN, "configs.0.decoder"),
    (CAMPAIGN, "configs.0.dataset"),
    (CAMPAIGN, "configs.0.measurement"),
    (CAMPAIGN, "configs.0.model"),
    (CAMPAIGN, "configs.0.pytorch"),
    ({**CAMPAIGN, "configs": [VLLM_CONFIG]}, "configs.0.vllm"),
    ({**CAMPAIGN, "configs": [TENSORRT_CONFIG]}, "configs.0.tensorrt"),
    (GRID, "grid"),
    (GRID, "grid.base"),
    (GRID, "grid.base.decoder"),
    (GRID, "grid.base.vllm"),
]


@pytest.mark.parametrize(
    ("campaign", "section"),
    [
        pytest.param(campaign, section, id=section or "top")
        for campaign, section in UNKNOWN_KEY_PLACES
    ],
)
def test_an_unknown_key_is_named_once_with_its_value(
    tmp_path: Path, campaign: dict[str, Any], section: str
) -> None:
    location = f"{section}.bogus_key" if section else "bogus_key"
    path, lines = refused(tmp_path, edited(campaign, location, "v-42"))
    assert len(lines) == 1, lines  # a grid's base is not reported once per combination
    assert lines[0].startswith(f"{path}: {key_path(location)}: unknown key (value 'v-42')")


# -- wrong types: never converted -------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "value", "problem"),
    [
        ("execution.cycles", "3", "Input should be a valid integer (got '3')"),
        ("execution.cycles", True, "Input should be a valid integer (got True)"),
        ("execution.cycles", 2.5, "Input should be a valid integer (got 2.5)"),
        ("execution.seed", "forty-two", "Input should be a valid integer (got 'forty-two')"),
        ("execution", [3, "grouped"], "Input should be a valid dictionary"),
        ("cold_start.force_cold_start", "yes", "Input should be a valid boolean (got 'yes')"),
        ("failures.retry_failed_on_resume", "false", "valid boolean (got 'false')"),
        ("health_check.enabled", 1, "Input should be a valid boolean (got 1)"),
        ("health_check", "strict", "Input should be a valid dictionary"),
        ("campaign_name", 123, "Input should be a valid string (got 123)"),
        ("configs", {"tiny": CONFIG}, "Input should be a valid list"),
        ("allowed_model_roots", "/models", "Input should be a valid list (got '/models')"),
        ("configs.0.model", "/models/tiny", "Input should be a valid dictionary"),
        ("configs.0.model", ["/models/tiny"], "Input should be a valid dictionary"),
        ("configs.0.model.trust_remote_code", "no", "valid boolean (got 'no')"),
        ("configs.0.decoder.temperature", "0.5", "Input should be a valid number (got '0.5')"),
        ("configs.0.decoder.max_new_tokens", [32], "Input should be a valid integer (got [32])"),
        ("configs.0.dataset.num_prompts", "20", "Input should be a valid integer (got '20')"),
        ("configs.0.measurement.min_window_seconds", False, "valid number (got False)"),
        ("configs.0.pytorch.batch_size", True, "Input should be a valid integer (got True)"),
        ("configs.0.pytorch.use_cache", "true", "valid boolean (got 'true')"),
        ("configs.0.precision", 16, "16 is not one of"),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value else None,
)
def test_a_value_of_the_wrong_type_is_refused_not_converted(
    tmp_path: Path, location: str, value: Any, problem: str
) -> None:
    path, lines = refused(tmp_path, edited(CAMPAIGN, location, value))
    assert lines[0].startswith(f"{path}: {key_path(location)}: "), lines
    assert problem in lines[0]


def test_an_int_where_a_number_is_expected_is_fine(tmp_path: Path) -> None:
    campaign = edited(CAMPAIGN, "execution", {"config_gap_seconds": 60, "cycles": 2})
    campaign = edited(campaign, "configs.0.decoder", {"temperature": 1, "top_p": 1})
    loaded = load_campaign(write_yaml(tmp_path / "campaign.yml", campaign))
    assert loaded.campaign.execution.config_gap_seconds == 60.0
    assert loaded.configs[0].decoder.temperature == 1.0


# -- huge grids -------------------------------------------------------------------------

# Four keys of 1,000 values each: 10^12 combinations.
HUGE_VARY = {
    key: list(range(1, 1001))
    for key in (
        "decoder.seed",
        "decoder.max_new_tokens",
        "decoder.top_k",
        "measurement.max_window_repeats",
    )
}


@pytest.fixture
def no_combination_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_build(*args: Any) -> None:
        raise AssertionError("a grid combination was built before the guard refused the grid")

    monkeypatch.setattr(grid_module, "_materialise", must_not_build)


@pytest.mark.usefixtures("no_combination_built")
def test_a_campaign_grid_of_10_to_the_12_is_refused_before_any_config_is_built(
    tmp_path: Path,
) -> None:
    path, lines = refused(tmp_path, grid_campaign(CONFIG, HUGE_VARY))
    assert lines == [
        f"{path}: grid.vary: 1000000000000 combinations, more than max_configs=1000; "
        "vary fewer values or raise the limit (--max-configs / max_configs)"
    ]


@pytest.mark.usefixtures("no_combination_built")
def test_lem_grid_of_10_to_the_12_is_refused_and_writes_no_config(tmp_path: Path) -> None:
    base = write_yaml(tmp_path / "base.yml", CONFIG)
    out_dir = tmp_path / "configs"
    varies = [f"--vary={key}={','.join(map(str, values))}" for key, values in HUGE_VARY.items()]

    result = runner.invoke(app, ["grid", str(base), *varies, "--out", str(out_dir)])

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {base}: vary: 1000000000000 combinations")
    assert not out_dir.exists()


# -- model paths: only where the services mount models -------------------------------------


@pytest.mark.parametrize(
    ("model_path", "problem"),
    [
        ("/etc/passwd", "'/etc/passwd' is outside the allowed model roots /models"),
        ("/modelsX/tiny", "'/modelsX/tiny' is outside the allowed model roots /models"),
        ("/tmp/models/tiny", "is outside the allowed model roots /models"),
        ("/models/../etc/shadow", "'/models/../etc/shadow' must not contain '..'"),
        ("/models/tiny/..", "must not contain '..'"),
        ("./tiny", "'./tiny' is a relative path"),
        ("../models/tiny", "'../models/tiny' is a relative path"),
        ("models/../tiny", "is a relative path"),
        ("~/models/tiny", "is a relative path"),
        ("org//name", "is a relative path"),
        ("org/name/extra", "is a relative path"),
        ("org/a..b", "'org/a..b' is a relative path (or not a valid hub id 'org/name')"),
        ("/models/a\x00b", "'/models/a\\x00b' contains a NUL character"),
    ],
)
def test_a_model_path_outside_the_mounts_is_refused_naming_the_key(
    tmp_path: Path, model_path: str, problem: str
) -> None:
    path, lines = refused(tmp_path, edited(CAMPAIGN, "configs.0.model.path", model_path))
    assert len(lines) == 1 and lines[0].startswith(f"{path}: configs[0].model.path: ")
    assert problem in lines[0]


@pytest.mark.parametrize(
    "model_path", ["/models/tiny", "/models/org/Llama-3.1-8B", "/models/", "org/name", "gpt2"]
)
def test_a_model_under_the_mounts_or_a_hub_id_is_accepted(tmp_path: Path, model_path: str) -> None:
    campaign = edited(CAMPAIGN, "configs.0.model.path", model_path)
    loaded = load_campaign(write_yaml(tmp_path / "campaign.yml", campaign))
    assert loaded.configs[0].model.path == model_path


def test_allowed_model_roots_replace_the_default(tmp_path: Path) -> None:
    campaign = {**CAMPAIGN, "allowed_model_roots": ["/data/models/", "/scratch"]}
    accepted = edited(campaign, "configs.0.model.path", "/scratch/llama")
    assert load_campaign(write_yaml(tmp_path / "ok.yml", accepted)).configs[0].model.path == (
        "/scratch/llama"
    )
    path, lines = refused(tmp_path, campaign)
    assert lines == [
        f"{path}: configs[0].model.path: '/models/tiny' is outside the allowed model roots "
        "/data/models, /scratch (where the services mount models; add a root with the "
        "campaign's allowed_model_roots)"
    ]


@pytest.mark.parametrize(
    ("roots", "problem"),
    [
        (["models"], "allowed_model_roots[0]: 'models' must be an absolute path without '..'"),
        (["/models/../etc"], "allowed_model_roots[0]: '/models/../etc' must be an absolute"),
        ([], "allowed_model_roots: List should have at least 1 item"),
    ],
)
def test_bad_allowed_model_roots_are_refused(
    tmp_path: Path, roots: list[str], problem: str
) -> None:
    path, lines = refused(tmp_path, {**CAMPAIGN, "allowed_model_roots": roots})
    assert lines[0].startswith(f"{path}: {problem}")


def test_a_model_path_in_a_config_file_names_that_file(tmp_path: Path) -> None:
    config_file = write_yaml(tmp_path / "configs" / "evil.yml", edited(CONFIG, "model.path", "/"))
    _, lines = refused(tmp_path, {**CAMPAIGN, "configs": ["configs/evil.yml"]})
    assert lines == [
        f"{config_file}: model.path: '/' is outside the allowed model roots /models (where "
        "the services mount models; add a root with the campaign's allowed_model_roots)"
    ]


@pytest.mark.parametrize(
    ("base_path", "vary", "key"),
    [
        ("/etc/llama", {"pytorch.batch_size": [1, 2]}, "grid.base.model.path"),
        ("/models/tiny", {"model.path": ["/models/a", "/etc/llama"]}, "grid.vary.model.path"),
        ("/models/tiny", {"model": [{"path": "/etc/llama"}]}, "grid.vary.model.path"),
    ],
)
def test_a_model_path_in_a_grid_names_where_it_came_from_once(
    tmp_path: Path, base_path: str, vary: dict[str, list[Any]], key: str
) -> None:
    campaign = grid_campaign(edited(CONFIG, "model.path", base_path), vary)
    path, lines = refused(tmp_path, campaign)
    assert lines == [
        f"{path}: {key}: '/etc/llama' is outside the allowed model roots /models (where "
        "the services mount models; add a root with the campaign's allowed_model_roots)"
    ]


def test_lem_experiment_by_hand_still_takes_any_local_path(tmp_path: Path) -> None:
    config_file = write_yaml(tmp_path / "local.yml", edited(CONFIG, "model.path", "./my-model"))
    assert load_experiment(config_file).model.path == "./my-model"


# -- shell syntax in config values is data -------------------------------------------------


def test_lem_experiment_carries_shell_syntax_in_the_config_as_data(tmp_path: Path) -> None:
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:8]}"
    hostile = f"/models/$(touch {marker}); touch {marker} #`touch {marker}`"
    config = edited(edited(CONFIG, "model.path", hostile), "dataset", {"name": hostile})
    config_file = write_yaml(tmp_path / "evil.yml", config)
    lem = Path(sys.executable).parent / "lem"

    completed = subprocess.run(
        [str(lem), "experiment", str(config_file), "--out", str(tmp_path / "out"), "--no-worker"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode != 0
    assert hostile in completed.stderr  # the value reaches the message verbatim
    assert not marker.exists()
    assert not (tmp_path / "out" / "result.json").exists()


# -- hostile files: one bounded line naming the file, never a traceback ------------------


def alias_bomb(levels: int = 9) -> str:
    """1 KB of YAML whose aliases expand to 9^9 strings (billion laughs)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "campaign_name: demo\n" + "\n".join(lines) + "\n"


def merge_bomb() -> str:
    """Merge keys (`<<`) that would copy 9^20 key lists while the mapping is built."""
    lines = ["m0: &m0 {k: 1}"]
    lines += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}" for i in range(1, 20)]
    return "campaign_name: demo\n" + "\n".join(lines) + "\n"


HOSTILE_FILES: dict[str, tuple[bytes, str]] = {
    "alias-bomb": (
        alias_bomb().encode(),
        "line 7: more than 200000 values once its YAML aliases are expanded; refused",
    ),
    "merge-bomb": (merge_bomb().encode(), "once its YAML aliases are expanded"),
    "alias-to-itself": (b"campaign_name: demo\nk: &a [1, *a]\n", "a YAML alias refers to itself"),
    "not-utf-8": (
        b"campaign_name: caf\xe9\n",
        "line 1, column 19: not UTF-8 text (byte 0xe9); save the file as UTF-8",
    ),
    "deep-nesting": (
        b"campaign_name: demo\nk: " + b"[" * 60 + b"]" * 60 + b"\n",
        "line 2: nested more than 50 levels deep",
    ),
    "deeper-than-libyaml": (
        b"campaign_name: demo\nk: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        "not valid YAML: line 2, column 1003:",
    ),
    "empty": (b"", "the file is empty; expected a campaign mapping"),
    "only-a-comment": (b"# nothing here\n", "the file is empty; expected a campaign mapping"),
    "top-level-list": (b"- campaign_name: demo\n", "expected a mapping at the top level"),
    "integer-of-5000-digits": (
        b"campaign_name: demo\nexecution:\n  cycles: " + b"9" * 5000 + b"\n",
        "line 3: a number of 5000 characters ('99999",
    ),
    "base-60-integer": (
        b"campaign_name: demo\nseed: " + b":".join([b"59"] * 5000) + b"\n",
        "line 2: a number of 14999 characters",
    ),
    "tab-indent": (
        b"campaign_name: demo\nexecution:\n\tcycles: 2\n",
        "not valid YAML: line 3, column 1: while scanning for the next token: found character "
        "that cannot start any token (a tab: YAML indents with spaces only)",
    ),
    "impossible-date": (b"campaign_name: demo\nday: 2024-13-45\n", "a value cannot be read"),
    "two-documents": (
        b"campaign_name: a\n---\ncampaign_name: b\n",
        "not valid YAML: line 2, column 1: expected a single document in the stream",
    ),
}


def validate_refuses(path: Path, named: Path | None = None) -> str:
    """`lem validate` on `path`: exit 2, nothing on stdout, one bounded line naming `named`
    (default: `path`); that line."""
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output[-2000:]
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == "" and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {named or path}: ") and len(line) < 600, line[:2000]
    return line


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_a_hostile_campaign_file_is_refused_on_one_line_naming_it(
    tmp_path: Path, name: str
) -> None:
    content, problem = HOSTILE_FILES[name]
    path = tmp_path / "campaign.yml"
    path.write_bytes(content)
    assert problem in validate_refuses(path)


@pytest.mark.parametrize("name", ["alias-bomb", "not-utf-8", "integer-of-5000-digits"])
def test_a_hostile_config_file_of_a_campaign_is_named(tmp_path: Path, name: str) -> None:
    content, problem = HOSTILE_FILES[name]
    config = tmp_path / "configs" / "bad.yml"
    config.parent.mkdir()
    config.write_bytes(content)
    campaign = write_yaml(tmp_path / "campaign.yml", {**CAMPAIGN, "configs": ["configs/bad.yml"]})
    assert problem in validate_refuses(campaign, named=config)


def test_a_directory_is_refused_as_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "campaign.yml").mkdir()
    assert validate_refuses(tmp_path / "campaign.yml").endswith("is a directory, not a file")


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    """Opening a FIFO with no writer would block for ever."""
    os.mkfifo(tmp_path / "campaign.yml")
    assert validate_refuses(tmp_path / "campaign.yml").endswith("not a regular file")


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "campaign.yml"
    path.write_bytes(b"campaign_name: demo\n" + b"#" * MAX_FILE_BYTES)
    assert validate_refuses(path).endswith("larger than 8 MiB; refused")


def test_a_5_mb_campaign_name_comes_back_shortened(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "campaign.yml", {**CAMPAIGN, "campaign_name": "a" * 5_000_000})
    line = validate_refuses(path)
    assert "campaign_name: String should have at most 128 characters (got 'aaaa" in line
    assert "aaaa...aaaa" in line and line.endswith("aaaa')") and len(line) < 300


def test_a_long_value_quoted_by_a_validator_is_clipped(tmp_path: Path) -> None:
    path, lines = refused(tmp_path, edited(CAMPAIGN, "configs.0.model.path", "/etc/" + "x" * 10**6))
    assert len(lines) == 1 and lines[0].startswith(f"{path}: configs[0].model.path: '/etc/xxx")
    assert len(lines[0]) <= MAX_LINE_CHARS and "characters cut)" in lines[0]


def test_a_huge_unknown_value_is_shortened(tmp_path: Path) -> None:
    path, lines = refused(tmp_path, {**CAMPAIGN, "extra": {"k": list(range(10**5)), "l": "x"}})
    (line,) = lines
    assert line.startswith(f"{path}: extra: unknown key (value {{'k': [0, 1, 2, 3, 4, ...], 'l'")


def test_many_errors_are_capped_with_a_count(tmp_path: Path) -> None:
    configs = [{**CONFIG, "config_name": f"c{i}", "nope": i} for i in range(100)]
    _, lines = refused(tmp_path, {**CAMPAIGN, "configs": configs})
    assert len(lines) == MAX_MESSAGE_LINES + 1
    assert lines[-1] == f"... and {100 - MAX_MESSAGE_LINES} more errors"


def test_an_alias_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """In a process capped at 1 GiB of address space (today's main needed over 2 GB)."""
    path = tmp_path / "campaign.yml"
    path.write_text(alias_bomb(), encoding="utf-8")
    lem = Path(sys.executable).parent / "lem"

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    completed = subprocess.run(
        [str(lem), "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=cap_memory,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.splitlines() == [
        f"error: {path}: line 7: more than 200000 values once its YAML aliases are expanded; "
        "refused (an alias bomb?)"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "cannot read JSON config: maximum recursion depth"),
        (b'{"decoder": {"seed": ' + b"9" * 5000 + b"}}", "cannot read JSON config: Exceeds"),
        (b'{"config_name": "caf\xe9"}', "line 1, column 21: not UTF-8 text (byte 0xe9)"),
    ],
)
def test_a_hostile_json_config_of_lem_experiment_is_one_line(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused_error:
        load_experiment(path)
    (line,) = str(refused_error.value).splitlines()
    assert line.startswith(f"{path}: ") and problem in line and len(line) <= MAX_LINE_CHARS
