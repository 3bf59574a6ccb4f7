"""Shipping an image archive to a host over SSH: with and without ssh's -C compression.

lem_services copies each image a host lacks as a `docker save` archive (ansible.builtin.copy
over the campaign's SSH connection). Ansible's default ssh_args add -C (zlib), which
ansible.cfg leaves out. This bench copies the same archive (the CPU image, saved once)
to this machine's own sshd on a loopback address, alternating the two settings, each
copy on a fresh SSH master connection (compression is the master's), and prints the
times and their ratio. Asserts nothing.

    .venv/bin/python bench/bench_image_copy.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import REPO, cpu_image, describe
from fixtures.campaign import HostDirs
from fixtures.sshd import ssh_inventory, ssh_servers

ADDRESS = "127.0.0.9"
MASTER = "-o ControlMaster=auto -o ControlPersist=60s"
SETTINGS = {"with -C (Ansible's default)": f"-C {MASTER}", "without (ansible.cfg)": MASTER}


def copy_seconds(root: Path, inventory: Path, archive: Path, ssh_args: str) -> float:
    control_dir = Path(tempfile.mkdtemp(dir=root))  # a fresh master for each copy
    dest = root / "copied.tar"
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
    }
    command = [
        str(REPO / ".venv" / "bin" / "ansible"),
        "-i",
        str(inventory),
        "host",
        "-m",
        "ansible.builtin.copy",
        "-a",
        f"src={archive} dest={dest} mode=0600",
    ]
    clock = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - clock
    dest.unlink()
    subprocess.run(["pkill", "-f", str(control_dir)], check=False)  # its master
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / "image.tar"
        image = cpu_image()
        subprocess.run(["docker", "save", "-o", str(archive), image], check=True)
        size_mb = archive.stat().st_size / 1e6
        with ssh_servers(root, (ADDRESS,)) as servers:
            host = HostDirs.fresh(root / "host", "bench-copy")  # its paths go unused
            inventory = ssh_inventory(
                root / "inventory.yml", servers, {"host": host}, {"host": ADDRESS}
            )
            times: dict[str, list[float]] = {label: [] for label in SETTINGS}
            for _ in range(args.rounds):  # alternated: both see the same machine load
                for label, ssh_args in SETTINGS.items():
                    times[label].append(copy_seconds(root, inventory, archive, ssh_args))
    print(f"{image}: a {size_mb:.0f} MB archive, ansible.builtin.copy over SSH to {ADDRESS}")
    for label, values in times.items():
        print(describe(label, values))
    compressed, plain = (min(values) for values in times.values())
    print(f"without -C / with -C (best of {args.rounds}): {plain / compressed:.2f}")


if __name__ == "__main__":
    main()
