"""CPU package energy from Linux RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`).

The counters are in microjoules and wrap at `max_energy_range_uj`; a delta that
goes backwards has wrapped once (callers read often enough that it cannot wrap
twice: the sampler reads every interval). Since 2020 kernels make `energy_uj`
readable by root only: an unreadable counter means no RAPL (`None`), never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
# Top-level zones only (intel-rapl:0, not the sub-zones intel-rapl:0:0 such as core or dram).
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class RaplDomain:
    name: str
    path: Path
    max_energy_uj: int


def wrapped_delta_uj(start_uj: int, end_uj: int, max_energy_uj: int) -> int:
    """Energy between two readings of one counter, across at most one wrap-around."""
    if end_uj >= start_uj:
        return end_uj - start_uj
    return max_energy_uj - start_uj + end_uj


class RaplReader:
    """Reads the package domains under `root` (configurable so tests use a temp tree)."""

    def __init__(self, root: Path = DEFAULT_POWERCAP_ROOT) -> None:
        self.root = root
        self.domains = self._discover()

    def _discover(self) -> list[RaplDomain]:
        if not self.root.is_dir():
            return []
        domains = []
        for zone in sorted(self.root.iterdir()):
            if not _PACKAGE_ZONE.match(zone.name):
                continue
            try:
                label = (zone / "name").read_text().strip()
                max_energy = int((zone / "max_energy_range_uj").read_text())
                int((zone / "energy_uj").read_text())  # readable now, or not at all
            except (OSError, ValueError):
                continue
            if label.startswith("package"):
                domains.append(RaplDomain(f"{zone.name}:{label}", zone, max_energy))
        return domains

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def read(self) -> list[int] | None:
        """One counter value (µJ) per domain, or None when any cannot be read."""
        if not self.domains:
            return None
        try:
            return [int((domain.path / "energy_uj").read_text()) for domain in self.domains]
        except (OSError, ValueError):
            return None

    def delta_j(self, start: list[int], end: list[int]) -> float:
        """Joules between two `read()` results, summed over the package domains."""
        total_uj = sum(
            wrapped_delta_uj(before, after, domain.max_energy_uj)
            for before, after, domain in zip(start, end, self.domains, strict=True)
        )
        return total_uj / 1e6


class RaplAccumulator:
    """Adds up energy over many readings, so that every wrap-around is seen."""

    def __init__(self, reader: RaplReader) -> None:
        self.reader = reader
        self._last = reader.read()
        self.energy_j: float | None = 0.0 if self._last is not None else None

    def update(self) -> None:
        if self._last is None or self.energy_j is None:
            return
        current = self.reader.read()
        if current is None:
            self.energy_j = None  # a counter became unreadable: the total is no longer whole
            return
        self.energy_j += self.reader.delta_j(self._last, current)
        self._last = current
