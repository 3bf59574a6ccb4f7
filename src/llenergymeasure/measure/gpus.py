"""Which GPUs this process uses, as NVML indices.

`CUDA_VISIBLE_DEVICES` decides which devices CUDA (and so the engine) uses; its
entries are indices into the devices this process can see, or UUIDs (`GPU-…`, a
unique prefix of one, or `MIG-…`). A UUID is looked up with nvmlDeviceGetHandleByUUID,
so it names the same GPU for CUDA and NVML in any order; a MIG instance maps to the GPU
that holds it (NVML meters only whole GPUs). An index means the same GPU to both only
when CUDA enumerates in PCI bus order, NVML's order: the services set
`CUDA_DEVICE_ORDER=PCI_BUS_ID`, and `order_warning` says when it is not so.
Inside a container the NVIDIA runtime has already applied
`NVIDIA_VISIBLE_DEVICES` to what NVML sees, so, without `CUDA_VISIBLE_DEVICES`, that
variable is applied only when NVML still sees more devices than it lists (a process
given it outside a container runtime, for bookkeeping).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from llenergymeasure.measure import nvml

_NO_DEVICES = {"none", "void", "-1"}
PCI_BUS_ORDER = "PCI_BUS_ID"


def visible_gpu_indices(environ: Mapping[str, str] | None = None) -> list[int]:
    """NVML indices of the GPUs this process uses; [] without NVML."""
    if not nvml.available():
        return []
    environ = os.environ if environ is None else environ
    uuids = [nvml.uuid(index) or "" for index in range(nvml.device_count())]
    every_gpu = list(range(len(uuids)))

    cuda_list = environ.get("CUDA_VISIBLE_DEVICES")
    if cuda_list is not None:
        entries = _split(cuda_list)
        return every_gpu if entries is None else _resolve(entries, every_gpu, uuids)

    runtime_list = environ.get("NVIDIA_VISIBLE_DEVICES")
    if runtime_list is not None:
        entries = _split(runtime_list)
        if entries is not None and len(uuids) > len(entries):
            return _resolve(entries, every_gpu, uuids)
    return every_gpu


def _split(value: str) -> list[str] | None:
    """The entries of a device list; None means 'all devices'."""
    text = value.strip()
    if text.lower() == "all":
        return None
    if text.lower() in _NO_DEVICES:
        return []
    return [entry.strip() for entry in text.split(",")]


def _resolve(entries: list[str], candidates: list[int], uuids: list[str]) -> list[int]:
    """Map entries (positions in `candidates`, or UUID prefixes) to NVML indices.

    Like CUDA, an entry that matches nothing ends the list.
    """
    resolved: list[int] = []
    for entry in entries:
        index = _match(entry, candidates, uuids)
        if index is None:
            break
        if index not in resolved:
            resolved.append(index)
    return resolved


def _match(entry: str, candidates: list[int], uuids: list[str]) -> int | None:
    if entry.isdigit():
        position = int(entry)
        return candidates[position] if position < len(candidates) else None
    if entry.startswith(("GPU-", "MIG-")):
        index = nvml.index_of_uuid(entry)  # a full UUID: NVML's own look-up
        if index is not None:
            return index if index in candidates else None
    if entry.startswith("GPU-"):  # CUDA also takes a unique prefix of a GPU UUID
        matches = [index for index in candidates if uuids[index].startswith(entry)]
        return matches[0] if len(matches) == 1 else None
    return None


def order_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the GPUs NVML reads may not be those CUDA uses, or None.

    Devices named by index in CUDA's default order (fastest first) can differ from
    NVML's (PCI bus) order when more than one GPU is visible.
    """
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_DEVICE_ORDER", "") == PCI_BUS_ORDER or nvml.device_count() < 2:
        return None
    entries = _split(environ.get("CUDA_VISIBLE_DEVICES", "all"))
    if entries is not None and all(entry.startswith(("GPU-", "MIG-")) for entry in entries):
        return None  # every device named by UUID: the order does not matter
    return (
        f"CUDA_DEVICE_ORDER is not {PCI_BUS_ORDER}: CUDA may number the GPUs in another "
        "order than NVML, so the GPUs metered may not be those the engine used"
    )


def mig_warning(gpu_indices: list[int], environ: Mapping[str, str] | None = None) -> str | None:
    """A warning when the GPUs metered are in MIG mode: a MIG instance is metered whole-GPU.

    What the container sees decides, not only CUDA_VISIBLE_DEVICES: compose `device_ids`
    hands a MIG instance over as NVIDIA_VISIBLE_DEVICES (applied by the runtime, so NVML
    then sees the parent GPU alone), and NVML says whether a visible GPU has MIG mode on."""
    environ = os.environ if environ is None else environ
    named = [
        variable
        for variable in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
        if "MIG-" in environ.get(variable, "")
    ]
    in_mig_mode = [index for index in gpu_indices if nvml.mig_enabled(index)]
    if not named and not in_mig_mode:
        return None
    why = f"{' and '.join(named)} name MIG instances" if named else ""
    if in_mig_mode:
        why += f"{'; ' if why else ''}GPU(s) {in_mig_mode} are in MIG mode"
    return (
        f"{why}: energy, power and temperature are those of the whole GPU that holds the "
        "instance, other instances' work included"
    )
