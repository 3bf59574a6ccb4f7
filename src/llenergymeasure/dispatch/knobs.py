"""GPU knobs on the host: lock clocks, set the power limit, and always undo it (docs/knobs.md).

Host side (plain dicts, no pydantic). Before anything is changed, every asked value is
checked against the card's supported range, and a state file records what to restore; it
is written atomically before the first change and removed only once everything is back, so
a run killed at any instant leaves the file for the next run's `restore` to act on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llenergymeasure.errors import LemError
from llenergymeasure.files import atomic_write_text
from llenergymeasure.measure import nvml

# knob -> the clock domain it locks, or "power"
KNOBS: dict[str, str] = {"sm_clock_mhz": "sm", "mem_clock_mhz": "mem", "power_limit_w": "power"}
STATE_VERSION = 1
_WHY: dict[str, str] = {
    "no_permission": (
        "NVML refused: no permission (NVML_ERROR_NO_PERMISSION); clocks and power limits "
        "can be set by root only: run the play with become (lem_knobs_become) on this host"
    ),
    "not_supported": "this GPU does not support it (NVML_ERROR_NOT_SUPPORTED)",
}


class KnobError(LemError):
    """A knob cannot be applied or restored; the message names key, value, GPU and reason."""


@dataclass(frozen=True)
class KnobRecord:
    """One knob on one GPU: what was asked, what NVML reads back, the card's range."""

    knob: str
    gpu_index: int
    asked: int
    applied: float | None
    supported_min: int
    supported_max: int


def asked_knobs(setting: Mapping[str, Any] | None) -> dict[str, int]:
    """The knobs of a config's `gpu` section that are set (null ones leave the GPU as it is)."""
    return {knob: int(value) for knob, value in (setting or {}).items() if value is not None}


def _failure(knob: str, value: int, index: int, error: nvml.NvmlCallError) -> KnobError:
    why = _WHY.get(error.reason, f"NVML said: {error.text}")
    return KnobError(f"gpu.{knob}={value} on GPU {index}: {why} ({error.function})")


def _no_gpu() -> KnobError:
    why = nvml.unavailable_reason() or "NVML sees no GPU"
    return KnobError(
        f"gpu knobs asked, but this host has no NVIDIA GPU ({why}): "
        "a campaign with a gpu section needs an NVIDIA GPU"
    )


def check_gpu(index: int) -> None:
    """KnobError when GPU `index` cannot take knobs at all: no NVML, or MIG mode."""
    if not nvml.available():
        raise _no_gpu()
    if index >= nvml.device_count():
        raise KnobError(f"gpu knobs asked for GPU {index}, but NVML sees no such GPU")
    if nvml.mig_enabled(index):
        raise KnobError(
            f"GPU {index} is in MIG mode: clocks and the power limit belong to the whole card "
            "and NVML refuses them under MIG; disable MIG or leave the gpu section unset"
        )


def supported_range(index: int, knob: str, asked: Mapping[str, int]) -> tuple[int, int]:
    """(min, max) of `knob` on GPU `index`: MHz for clocks, W for the power limit.

    The SM clocks a card supports depend on its memory clock: the asked one, else the highest.
    """
    if KNOBS[knob] == "power":
        low, high = nvml.power_limit_constraints_mw(index)
        return low // 1000, high // 1000
    memory = nvml.supported_memory_clocks(index)
    if KNOBS[knob] == "mem":
        return min(memory), max(memory)
    graphics = nvml.supported_graphics_clocks(index, asked.get("mem_clock_mhz", max(memory)))
    return min(graphics), max(graphics)


def check_setting(index: int, asked: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The supported range of every asked knob; KnobError naming key, value and range when a
    value lies outside it, or the range cannot be read (no permission, not supported)."""
    check_gpu(index)
    ranges = {}
    for knob, value in asked.items():
        try:
            low, high = supported_range(index, knob, asked)
        except nvml.NvmlCallError as exc:
            raise _failure(knob, value, index, exc) from None
        if not low <= value <= high:
            raise KnobError(
                f"gpu.{knob}={value} is outside GPU {index}'s supported range "
                f"{low}..{high} ({nvml.name(index)})"
            )
        ranges[knob] = (low, high)
    return ranges


def _read_back(index: int, knob: str) -> float | None:
    try:
        if KNOBS[knob] == "power":
            return nvml.power_management_limit_mw(index) / 1000
        return float(nvml.current_clock_mhz(index, KNOBS[knob]))
    except nvml.NvmlCallError:
        return None


def _set(index: int, knob: str, value: int) -> None:
    if KNOBS[knob] == "power":
        nvml.set_power_limit_mw(index, value * 1000)
    else:
        nvml.lock_clock(index, KNOBS[knob], value)


def _undo(index: int, knob: str, original_mw: int | None) -> None:
    if KNOBS[knob] == "power":
        if original_mw is not None:
            nvml.set_power_limit_mw(index, original_mw)
    else:
        nvml.reset_clock(index, KNOBS[knob])


def read_state(path: Path) -> dict[str, Any] | None:
    """The state file's content, None when there is none; KnobError when it does not parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KnobError(f"{path}: cannot read the GPU knob state file: {exc.strerror}") from None
    try:
        state = json.loads(text)
        state["changes"]
    except (ValueError, KeyError, TypeError):
        raise KnobError(
            f"{path}: the GPU knob state file does not parse; restore the GPU by hand "
            "(nvidia-smi -rgc; nvidia-smi -rmc; nvidia-smi -pl DEFAULT) and remove it"
        ) from None
    return state


def _write_state(path: Path, setting: Mapping[str, int], changes: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"version": STATE_VERSION, "setting": dict(setting), "changes": changes}
    atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True) + "\n")


def apply(indices: list[int], setting: Mapping[str, Any], state_path: Path) -> list[KnobRecord]:
    """Apply `setting` (a config's `gpu` section) to the GPUs `indices`, after restoring
    whatever an earlier run left; the records of what was asked, applied and supported.

    Every value is checked on every GPU before the first change. A change that fails is
    undone with everything set before it, and the state file removed.
    """
    restore(state_path)
    asked = asked_knobs(setting)
    if not asked:
        return []
    ranges = {index: check_setting(index, asked) for index in indices}
    changes = [
        {
            "gpu_index": index,
            "knob": knob,
            "original_mw": nvml.power_management_limit_mw(index)
            if KNOBS[knob] == "power"
            else None,
        }
        for index in indices
        for knob in asked
    ]
    _write_state(state_path, asked, changes)  # before the first change: a crash leaves it
    for done, change in enumerate(changes):
        index, knob = change["gpu_index"], change["knob"]
        try:
            _set(index, knob, asked[knob])
        except nvml.NvmlCallError as exc:
            _write_state(state_path, asked, changes[:done])  # undo only what was changed
            restore(state_path)
            raise _failure(knob, asked[knob], index, exc) from None
    return [
        KnobRecord(knob, index, asked[knob], _read_back(index, knob), *ranges[index][knob])
        for index in indices
        for knob in asked
    ]


def restore(state_path: Path) -> list[str]:
    """Undo what the state file records (clocks reset, power limit back to its value), then
    remove it; what was restored, as lines. KnobError, the file kept, when any undo fails."""
    state = read_state(state_path)
    if state is None:
        return []
    done, failed = [], []
    for change in state["changes"]:
        index, knob = int(change["gpu_index"]), str(change["knob"])
        try:
            _undo(index, knob, change.get("original_mw"))
            done.append(f"GPU {index}: gpu.{knob} restored")
        except nvml.NvmlCallError as exc:
            failed.append(f"GPU {index}: gpu.{knob}: {_WHY.get(exc.reason, exc.text)}")
    if failed:
        raise KnobError(
            f"{state_path}: could not restore the GPU: {'; '.join(failed)} (the state file is "
            "kept, the next run tries again)"
        )
    state_path.unlink(missing_ok=True)
    return done


def records_json(records: list[KnobRecord]) -> list[dict[str, Any]]:
    return [asdict(record) for record in records]


def gpu_indices(device_ids: list[str]) -> list[int]:
    """The NVML indices of a lane's GPUs (its compose device_ids: indices in PCI bus order, as
    nvidia-smi numbers them, or UUIDs), all GPUs when none are given."""
    if not device_ids:
        if nvml.device_count() == 0:
            raise _no_gpu()
        return list(range(nvml.device_count()))
    indices = []
    for device_id in device_ids:
        index = nvml.index_of_uuid(device_id) if not device_id.isdigit() else int(device_id)
        if index is None:
            raise KnobError(f"gpu knobs: NVML knows no GPU {device_id!r} (device_ids)")
        indices.append(index)
    return indices


def knob_outcome(params: Mapping[str, Any], check_mode: bool) -> dict[str, Any]:
    """What the `lem_gpu_knobs` task does and returns: `state` 'checked' (every one of
    `settings` fits every GPU: refused before any experiment otherwise), 'applied' (restore
    what an earlier run left, then apply `setting`) or 'restored'. Check mode changes nothing."""
    state_path = Path(params["state_file"])
    if params["state"] == "checked":
        indices = gpu_indices(params["device_ids"]) if params["settings"] else []
        for setting in params["settings"]:
            for index in indices:
                check_setting(index, asked_knobs(setting))
        return {"changed": False, "restored": [], "knobs": [], "asked": {}}
    asked = asked_knobs(params["setting"] if params["state"] == "applied" else None)
    pending = read_state(state_path)
    if check_mode:
        return {"changed": bool(pending or asked), "restored": [], "knobs": [], "asked": asked}
    restored = restore(state_path)
    records = apply(gpu_indices(params["device_ids"]), asked, state_path) if asked else []
    return {
        "changed": bool(restored or records),
        "restored": restored,
        "knobs": records_json(records),
        "asked": asked,
    }
