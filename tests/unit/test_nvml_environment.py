"""collect_environment: host, CPU model, GPUs, driver and CUDA from NVML, versions."""

from __future__ import annotations

from pathlib import Path

from fakes.fake_nvml import FakeGpu, FakeNvml, gpus, installed

from llenergymeasure import __version__
from llenergymeasure.measure.environment import collect_environment, cpu_model, gpu_name

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""


def cpuinfo(tmp_path: Path, text: str = X86_CPUINFO) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_cpu_model_from_x86_and_arm_cpuinfo(tmp_path: Path) -> None:
    assert cpu_model(cpuinfo(tmp_path)) == "Intel(R) Xeon(R) Platinum 8480+"
    arm = cpuinfo(tmp_path, "processor\t: 0\nBogoMIPS\t: 50.00\nModel\t: NVIDIA Grace\n")
    assert cpu_model(arm) == "NVIDIA Grace"


def test_gpu_environment_from_nvml(tmp_path: Path) -> None:
    fake = FakeNvml(gpus(2, name="NVIDIA H100 80GB HBM3", power_limit_mw=700_000))
    with installed(fake):
        environment = collect_environment(
            "cuda", {"torch": "2.5.1"}, gpu_indices=[0, 1], cpuinfo=cpuinfo(tmp_path)
        )
    assert environment.gpu_name == "NVIDIA H100 80GB HBM3"
    assert environment.gpu_count == 2
    assert environment.gpu_uuids == [gpu.uuid for gpu in fake.gpus]
    assert (environment.driver_version, environment.cuda_version) == ("550.54.15", "12.4")
    assert environment.power_limit_w == [700.0, 700.0]
    assert environment.sm_clock_mhz == [1980, 1980]
    assert environment.mem_clock_mhz == [2619, 2619]
    assert environment.versions == {"torch": "2.5.1"}
    assert environment.lem_version == __version__
    assert environment.hardware == "2x NVIDIA H100 80GB HBM3"


def test_cpu_host_has_no_gpu_fields(tmp_path: Path) -> None:
    with installed(FakeNvml([], driver_loaded=False)):
        environment = collect_environment("cpu", {}, cpuinfo=cpuinfo(tmp_path))
    assert environment.gpu_count == 0 and environment.gpu_name is None
    assert environment.driver_version is None and environment.cuda_version is None
    assert environment.hardware == "Intel(R) Xeon(R) Platinum 8480+"


def test_mixed_gpus_are_named_together() -> None:
    with installed(FakeNvml([FakeGpu(name="NVIDIA A100"), FakeGpu(name="NVIDIA L4")])):
        environment = collect_environment("cuda", {}, gpu_indices=[0, 1])
    assert environment.gpu_name == "NVIDIA A100 + NVIDIA L4"
    assert gpu_name(["NVIDIA L4", None, "NVIDIA L4"]) == "NVIDIA L4"
