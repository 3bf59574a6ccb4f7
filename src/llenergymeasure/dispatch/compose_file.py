"""The host's compose file: docker/compose.yml.j2 rendered as the lem_services role does.

On a campaign the role renders the template with Ansible's template module; this is
the same rendering in Python, for scripts/gpu-check.sh (`python -m
llenergymeasure.gpucheck render-compose`) and for the tests and benches that bring a
service up without the role. Standard library and Jinja2 only (gpucheck.py runs
before the package's dependencies are installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render_compose(template: Path, variables: dict[str, Any]) -> str:
    """docker/compose.yml.j2 rendered as the lem_services role does (trim_blocks, strict)."""
    import jinja2  # a dependency of torch: present wherever the check runs

    environment = jinja2.Environment(
        trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return environment.from_string(template.read_text(encoding="utf-8")).render(**variables)
