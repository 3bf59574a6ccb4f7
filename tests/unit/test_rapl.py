"""RAPL package energy, read from a fake powercap tree in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.measure.rapl import RaplAccumulator, RaplReader, wrapped_delta_uj

MAX_UJ = 262_143_328_850


def add_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path = root / zone
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def two_packages(tmp_path: Path) -> tuple[Path, Path, Path]:
    package0 = add_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    package1 = add_zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    add_zone(tmp_path, "intel-rapl:0:0", "core", 7)  # a sub-zone: not a package
    add_zone(tmp_path, "intel-rapl:2", "psys", 9)  # platform zone: not a package
    return tmp_path, package0, package1


def test_delta_without_wrap_is_the_difference() -> None:
    assert wrapped_delta_uj(100, 250, 1000) == 150


def test_delta_across_a_wrap_adds_the_range() -> None:
    # 900 -> max (1000) is 100 µJ, then 0 -> 30 is 30 µJ
    assert wrapped_delta_uj(900, 30, 1000) == 130


def test_reader_finds_only_package_zones(two_packages: tuple[Path, Path, Path]) -> None:
    root, _, _ = two_packages
    reader = RaplReader(root)
    assert [domain.name for domain in reader.domains] == [
        "intel-rapl:0:package-0",
        "intel-rapl:1:package-1",
    ]
    assert reader.read() == [1_000_000, 5_000_000]


def test_energy_is_summed_over_packages_with_wrap(two_packages: tuple[Path, Path, Path]) -> None:
    root, package0, package1 = two_packages
    set_energy(package0, MAX_UJ - 2_000_000)
    reader = RaplReader(root)
    start = reader.read()
    set_energy(package0, 3_000_000)  # wrapped: 2 J to the top, then 3 J
    set_energy(package1, 9_000_000)  # 4 J
    end = reader.read()
    assert start is not None and end is not None
    assert reader.delta_j(start, end) == pytest.approx(9.0)


def test_accumulator_sees_each_wrap_of_a_long_window(tmp_path: Path) -> None:
    zone = add_zone(tmp_path, "intel-rapl:0", "package-0", 0, max_uj=1_000_000)
    accumulator = RaplAccumulator(RaplReader(tmp_path))
    # Two wraps of a 1 J counter, each seen by a read: 0.6 + 0.5 + 0.6 + 0.5 + 0.3 J.
    for value in (600_000, 100_000, 700_000, 200_000, 500_000):
        set_energy(zone, value)
        accumulator.update()
    assert accumulator.energy_j == pytest.approx(2.5)


def test_unreadable_counter_means_no_rapl(tmp_path: Path) -> None:
    zone = add_zone(tmp_path, "intel-rapl:0", "package-0", 10)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()  # reading a directory fails like a root-only file does
    reader = RaplReader(tmp_path)
    assert not reader.available
    assert reader.read() is None
    assert RaplAccumulator(reader).energy_j is None


def test_missing_powercap_tree_means_no_rapl(tmp_path: Path) -> None:
    assert RaplReader(tmp_path / "absent").read() is None


def test_counter_lost_mid_window_voids_the_total(tmp_path: Path) -> None:
    zone = add_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    accumulator = RaplAccumulator(RaplReader(tmp_path))
    set_energy(zone, 1_000_000)
    accumulator.update()
    (zone / "energy_uj").write_text("garbage\n")
    accumulator.update()
    assert accumulator.energy_j is None
