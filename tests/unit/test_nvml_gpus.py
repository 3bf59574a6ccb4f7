"""visible_gpu_indices: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES against NVML's view."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.fake_nvml import FakeGpu, FakeNvml, gpus, installed

from llenergymeasure.measure.gpus import mig_warning, order_warning, visible_gpu_indices


@pytest.fixture
def four_gpus() -> Iterator[FakeNvml]:
    with installed(FakeNvml(gpus(4))) as library:
        yield library


def uuid_of(fake: FakeNvml, index: int) -> str:
    return fake.gpus[index].uuid


def test_no_nvml_means_no_gpus() -> None:
    with installed(FakeNvml(gpus(2), driver_loaded=False)):
        assert visible_gpu_indices({}) == []


def test_all_gpus_without_any_variable(four_gpus: FakeNvml) -> None:
    assert visible_gpu_indices({}) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2,0", [2, 0]),
        ("1, 3", [1, 3]),
        ("", []),
        ("-1", []),
        ("0,7,1", [0]),  # like CUDA, an invalid entry ends the list
        ("all", [0, 1, 2, 3]),
    ],
)
def test_cuda_visible_devices_by_index(
    four_gpus: FakeNvml, value: str, expected: list[int]
) -> None:
    assert visible_gpu_indices({"CUDA_VISIBLE_DEVICES": value}) == expected


def test_cuda_visible_devices_by_uuid_prefix(four_gpus: FakeNvml) -> None:
    prefix = uuid_of(four_gpus, 3)[:16]
    assert visible_gpu_indices({"CUDA_VISIBLE_DEVICES": prefix}) == [3]


def test_nvidia_visible_devices_already_applied_by_the_runtime_is_not_applied_twice() -> None:
    # The container runtime gave this process GPU 2 of the host: NVML sees one device.
    with installed(FakeNvml(gpus(1))):
        assert visible_gpu_indices({"NVIDIA_VISIBLE_DEVICES": "2"}) == [0]


def test_nvidia_visible_devices_outside_a_runtime_selects_gpus(four_gpus: FakeNvml) -> None:
    environ = {"NVIDIA_VISIBLE_DEVICES": f"1,{uuid_of(four_gpus, 3)}"}
    assert visible_gpu_indices(environ) == [1, 3]


def test_cuda_visible_devices_decides_over_an_unapplied_runtime_list(four_gpus: FakeNvml) -> None:
    # Outside a container runtime CUDA ignores NVIDIA_VISIBLE_DEVICES: the engine uses GPU 1.
    environ = {"NVIDIA_VISIBLE_DEVICES": "2,3", "CUDA_VISIBLE_DEVICES": "1"}
    assert visible_gpu_indices(environ) == [1]


def test_a_full_uuid_is_looked_up_through_nvml(four_gpus: FakeNvml) -> None:
    assert visible_gpu_indices({"CUDA_VISIBLE_DEVICES": uuid_of(four_gpus, 2)}) == [2]
    assert "handle_by_uuid" in four_gpus.calls


def test_a_mig_instance_is_metered_on_the_gpu_that_holds_it() -> None:
    devices = gpus(2)
    devices[1].mig_uuids = ["MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"]
    with installed(FakeNvml(devices)):
        environ = {"CUDA_VISIBLE_DEVICES": "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
        assert visible_gpu_indices(environ) == [1]
        assert mig_warning([1], environ) is not None
        assert mig_warning([0], {"CUDA_VISIBLE_DEVICES": "0"}) is None


MIG_INSTANCE = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def test_a_mig_instance_given_through_compose_device_ids_is_warned_about() -> None:
    """compose `device_ids: [MIG-…]`: the runtime sets NVIDIA_VISIBLE_DEVICES, NVML in the
    container sees the parent GPU alone (in MIG mode), CUDA_VISIBLE_DEVICES is unset."""
    parent = FakeGpu(mig_mode=True, mig_uuids=[MIG_INSTANCE])
    with installed(FakeNvml([parent])):
        environ = {"NVIDIA_VISIBLE_DEVICES": MIG_INSTANCE}
        visible = visible_gpu_indices(environ)
        warning = mig_warning(visible, environ)
    assert visible == [0]
    assert warning is not None and "NVIDIA_VISIBLE_DEVICES" in warning and "[0]" in warning


def test_a_gpu_in_mig_mode_is_warned_about_whatever_the_environment_says() -> None:
    with installed(FakeNvml([FakeGpu(mig_mode=True)])):
        warning = mig_warning([0], {})
    assert warning is not None and "GPU(s) [0] are in MIG mode" in warning


@pytest.mark.parametrize("mode", [False, None], ids=["mig-off", "no-mig"])
def test_a_whole_gpu_gets_no_mig_warning(mode: bool | None) -> None:
    with installed(FakeNvml([FakeGpu(mig_mode=mode)])):
        assert mig_warning([0], {"NVIDIA_VISIBLE_DEVICES": "all"}) is None


@pytest.mark.parametrize(
    ("environ", "warned"),
    [
        ({}, True),
        ({"CUDA_VISIBLE_DEVICES": "1,0"}, True),
        ({"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}, True),
        ({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, False),
        ({"CUDA_VISIBLE_DEVICES": "GPU-00000001-aaaa-bbbb-cccc-000000000001"}, False),
    ],
)
def test_an_index_in_cuda_s_default_order_is_flagged(
    four_gpus: FakeNvml, environ: dict[str, str], warned: bool
) -> None:
    assert (order_warning(environ) is not None) is warned


def test_one_gpu_has_no_order_to_get_wrong() -> None:
    with installed(FakeNvml(gpus(1))):
        assert order_warning({}) is None
