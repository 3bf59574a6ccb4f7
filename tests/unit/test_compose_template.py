"""docker/compose.yml.j2 rendered with the variables Ansible passes, and the Dockerfiles."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from fixtures.compose import REPO, cpu_host_variables, render_compose
from fixtures.load import load_module

from llenergymeasure.contracts.services import service_of

STATE = Path("/var/lib/lem/state/demo")
MODELS = Path("/srv/models")
filters = load_module(REPO / "filter_plugins" / "lem.py", "lem_filters_for_compose")


def services(**overrides: Any) -> dict[str, Any]:
    variables = cpu_host_variables("lem-demo", "lem-pytorch-cpu:0.1.0", STATE, MODELS)
    return yaml.safe_load(render_compose({**variables, **overrides}))["services"]


def test_cpu_host_gets_one_healthchecked_worker_service_without_gpus() -> None:
    (name, service), *others = services().items()

    assert (name, others) == ("pytorch", [])
    assert service["image"] == "lem-pytorch-cpu:0.1.0"
    assert service["init"] is True
    assert service["command"] == ["lem", "worker"]
    assert service["healthcheck"]["test"] == ["CMD", "test", "-S", "/run/lem/worker.sock"]
    assert "LEM_WORKER_SOCKET=/run/lem/worker.sock" in service["environment"]
    assert "deploy" not in service and "shm_size" not in service
    assert service["volumes"] == [
        {"type": "bind", "source": str(STATE), "target": "/lem/state"},
        {"type": "bind", "source": str(MODELS), "target": "/models", "read_only": True},
    ]


def backends(*names: str) -> dict[str, str]:
    """`lem_services` of one service per backend, named after it."""
    return {name: name for name in names}


def test_each_backend_gets_its_own_service_and_image() -> None:
    images = {"pytorch": "lem-pytorch:1", "vllm": "lem-vllm:1", "tensorrt": "lem-tensorrt:1"}

    rendered = services(lem_services=backends("vllm", "tensorrt"), lem_images=images)

    assert {name: s["image"] for name, s in rendered.items()} == {
        "vllm": "lem-vllm:1",
        "tensorrt": "lem-tensorrt:1",
    }
    assert rendered["vllm"]["labels"] == {"lem.backend": "vllm", "lem.service": "vllm"}


def test_two_vllm_versions_get_two_services_each_with_its_image_on_the_lane() -> None:
    """What lem_services renders for a campaign with vllm.version [0.11.1, 0.33.0]."""
    pending = [
        {"service": service_of(config), "backend": "vllm", "config": config}
        for config in (
            {"backend": "vllm", "vllm": {"version": "0.11.1"}},
            {"backend": "vllm", "vllm": {"version": "0.33.0"}},
        )
    ]
    needed = filters.lem_services(pending, {"vllm": "vllm"})
    images = {"vllm": "lem-vllm:1", "vllm-0.33.0": "lem-vllm:1-vllm0.33.0"}

    rendered = services(
        lem_services={name: s["backend"] for name, s in needed.items()},
        lem_images=images,
        lem_gpu=True,
        lem_gpu_device_ids=["1"],
    )

    assert {name: s["image"] for name, s in rendered.items()} == images
    for name, service in rendered.items():
        assert service["labels"] == {"lem.backend": "vllm", "lem.service": name}
        assert "LEM_BACKEND=vllm" in service["environment"]
        assert service["healthcheck"]["start_period"] == "10m"
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["device_ids"] == ["1"]


def test_gpu_lane_reserves_only_its_devices() -> None:
    service = services(lem_gpu=True, lem_gpu_device_ids=[2, 3])["pytorch"]

    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "capabilities": ["gpu"], "device_ids": ["2", "3"]}
    assert service["shm_size"] == "8gb"


def test_gpu_host_without_device_ids_reserves_all_gpus() -> None:
    service = services(lem_gpu=True)["pytorch"]

    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["count"] == "all" and "device_ids" not in device


@pytest.mark.parametrize("value", ["false", "False", "no", "0", False])
def test_false_given_as_text_means_no_gpu(value: Any) -> None:
    assert "deploy" not in services(lem_gpu=value)["pytorch"]


def test_secrets_are_passed_by_name_and_values_are_escaped_for_compose() -> None:
    hostile = "$(touch /tmp/pwned); \"quoted\" 'single' ${HOME}"

    environment = services(lem_env={"LEM_NOTE": hostile}, lem_env_passthrough=["HF_TOKEN"])[
        "pytorch"
    ]["environment"]

    # `$$` is Compose's literal dollar: the value reaches the container unchanged.
    assert f"LEM_NOTE={hostile.replace('$', '$$')}" in environment
    assert "HF_TOKEN" in environment
    assert not any(entry.startswith("HF_TOKEN=") for entry in environment)


def test_hub_is_offline_unless_asked() -> None:
    assert "HF_HUB_OFFLINE=1" in services()["pytorch"]["environment"]
    assert "HF_HUB_OFFLINE=0" in services(lem_hf_offline="false")["pytorch"]["environment"]


def test_missing_required_variable_is_named() -> None:
    variables = cpu_host_variables("p", "i", STATE, MODELS)
    del variables["lem_models_dir"]

    with pytest.raises(jinja2.UndefinedError, match="lem_models_dir"):
        render_compose(variables)


def build_steps(dockerfile: Path) -> list[str]:
    """Instructions without comments, defaults that differ per backend, or the entrypoint."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text(encoding="utf-8"))
    per_backend = ("ARG BASE_IMAGE=", "ARG LEM_BACKEND=", "ENTRYPOINT")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(per_backend)
    ]


def test_backend_dockerfiles_build_the_same_way() -> None:
    pytorch, vllm, tensorrt = (
        build_steps(REPO / "docker" / f"Dockerfile.{name}")
        for name in ("pytorch", "vllm", "tensorrt")
    )

    assert vllm == pytorch and tensorrt == pytorch


def test_engines_get_a_start_period_for_their_import_while_checks_stay_frequent() -> None:
    images = {"pytorch": "p:1", "vllm": "v:1", "tensorrt": "t:1"}

    rendered = services(lem_services=backends("pytorch", "vllm", "tensorrt"), lem_images=images)

    health = {name: service["healthcheck"] for name, service in rendered.items()}
    # A failed check during the start period does not count: `up --wait` keeps waiting
    # for a worker still importing its engine; the first passing check makes it healthy.
    assert {name: h["start_period"] for name, h in health.items()} == {
        "pytorch": "2m",
        "vllm": "10m",
        "tensorrt": "10m",
    }
    assert {h["interval"] for h in health.values()} == {"5s"}


def test_start_period_is_settable_per_backend() -> None:
    images = {"pytorch": "p:1", "vllm": "v:1"}

    rendered = services(
        lem_services=backends("pytorch", "vllm"),
        lem_images=images,
        lem_health_start_period={"vllm": "20m"},
    )

    assert rendered["vllm"]["healthcheck"]["start_period"] == "20m"
    assert rendered["pytorch"]["healthcheck"]["start_period"] == "2m"


def test_role_passes_the_start_periods_that_fit_its_wait_timeout() -> None:
    defaults = yaml.safe_load((REPO / "roles/lem_services/defaults/main.yml").read_text())
    tasks = yaml.safe_load((REPO / "roles/lem_services/tasks/main.yml").read_text())
    (render,) = [task for task in tasks if task.get("name") == "Render the compose file"]
    minutes = [
        int(value.removesuffix("m"))
        for value in defaults["lem_services_health_start_period"].values()
    ]

    assert render["vars"]["lem_health_start_period"] == "{{ lem_services_health_start_period }}"
    assert defaults["lem_services_wait_timeout"] > 60 * max(minutes)


@pytest.mark.parametrize("gpu", [False, True])
def test_cuda_numbers_gpus_in_nvml_order(gpu: bool) -> None:
    images = {"pytorch": "p:1", "vllm": "v:1"}

    rendered = services(lem_services=backends("pytorch", "vllm"), lem_images=images, lem_gpu=gpu)

    for service in rendered.values():
        assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in service["environment"]


def test_worker_socket_directory_is_emptied_with_each_container_start() -> None:
    assert services()["pytorch"]["tmpfs"] == ["/run/lem"]
    custom = services(lem_worker_socket="/var/run/lem-w/w.sock")["pytorch"]
    assert custom["tmpfs"] == ["/var/run/lem-w"]
    assert "tmpfs" not in services(lem_worker_socket="/w.sock")["pytorch"]


def test_start_interval_is_rendered_only_when_given() -> None:
    """An engine older than 25 refuses start_interval: the role passes "" for it there."""
    assert "start_interval" not in services()["pytorch"]["healthcheck"]
    assert "start_interval" not in services(lem_health_start_interval=" ")["pytorch"]["healthcheck"]

    health = services(lem_health_start_interval="1s", lem_health_interval="7s")["pytorch"][
        "healthcheck"
    ]

    assert (health["start_interval"], health["interval"]) == ("1s", "7s")
