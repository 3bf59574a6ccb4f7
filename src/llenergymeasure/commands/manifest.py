"""Command: `lem status` (what the manifests say: counts by status, failed experiments)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from llenergymeasure.commands.common import fail, reports_errors, wide_console
from llenergymeasure.controller.progress import format_duration, manifests_eta
from llenergymeasure.errors import ManifestError
from llenergymeasure.host.manifest import STATUSES, Manifest, load_manifest, summarize
from llenergymeasure.lease import HOST_LOCK_NAME, describe_holder, read_host_lock

MANIFEST_NAME = "manifest.json"


def find_manifests(target: Path) -> list[Path]:
    """`target` itself when it is a file, else every manifest.json under it."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise ManifestError(f"{target}: no such file or directory")
    return sorted(target.rglob(MANIFEST_NAME))


def _status_table(loaded: list[tuple[Path, Manifest]]) -> Table:
    table = Table(title="manifests", title_justify="left")
    for header in ("manifest", "campaign", "host", *STATUSES, "total"):
        table.add_column(
            header, justify="left" if header in {"manifest", "campaign", "host"} else "right"
        )
    totals = dict.fromkeys(STATUSES, 0)
    for path, manifest in loaded:
        counts = summarize(manifest)
        for status, count in counts.items():
            totals[status] += count
        table.add_row(
            str(path),
            manifest.campaign_name,
            manifest.host,
            *(str(counts[s]) for s in STATUSES),
            str(len(manifest.entries)),
        )
    table.add_section()
    table.add_row("total", "", "", *(str(totals[s]) for s in STATUSES), str(sum(totals.values())))
    return table


def _failed_lines(loaded: list[tuple[Path, Manifest]]) -> list[str]:
    return [
        f"failed: {entry.exp_id} on {manifest.host} (attempts {entry.attempts}): {entry.error}"
        for _, manifest in loaded
        for entry in manifest.entries.values()
        if entry.status == "failed"
    ]


def host_lock_lines(target: Path, manifests: list[Path]) -> list[str]:
    """Who holds each host lock under `target` or beside the manifests' state roots.

    A host's state root holds `host.lock` and one directory per campaign, each with its
    manifest: `<root>/<campaign>/manifest.json`.
    """
    found = set(target.rglob(HOST_LOCK_NAME)) if target.is_dir() else set()
    found |= {path.parent.parent / HOST_LOCK_NAME for path in manifests}
    lines = []
    for lock in sorted(path for path in found if path.is_file()):
        holder = read_host_lock(lock)
        lines.append(f"host lock {lock}: " + (describe_holder(holder) if holder else "free"))
    return lines


def status(
    target: Path = typer.Argument(
        ...,
        help="A manifest.json, or a directory searched recursively for manifest.json files.",
        show_default=False,
    ),
) -> None:
    """Show the progress of campaigns: experiments per status in each manifest, and the total.

    Shows who holds each host lock (`host.lock` in a host's state root, beside its
    campaigns' directories) found under TARGET or above its manifests: run it on the
    host, on its state root. Lists each failed experiment with its error and, while
    experiments are left, the ETA: per host, the experiments left times the median
    interval between two of its experiments finishing; hosts run in parallel. Exits 0;
    exits 2 when a manifest cannot be read (the message names the file, which is left
    as it is).

    Example: lem status state/demo
    """
    paths = find_manifests(target)
    if not paths:
        raise fail(f"{target}: no {MANIFEST_NAME} found")
    loaded, errors = [], []
    for path in paths:
        try:
            loaded.append((path, load_manifest(path)))
        except ManifestError as exc:
            errors.append(str(exc))
    console = wide_console()
    console.print(_status_table(loaded))
    eta = manifests_eta([manifest for _, manifest in loaded])
    left = sum(e.status in ("pending", "running") for _, m in loaded for e in m.entries.values())
    if eta is not None and left:
        console.print(f"ETA: {format_duration(eta)} for {left} experiment(s) left", markup=False)
    for line in [*host_lock_lines(target, paths), *_failed_lines(loaded)]:
        console.print(line, markup=False, highlight=False)
    if errors:
        raise fail("\n".join(errors))


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("status")(reports_errors(status))
