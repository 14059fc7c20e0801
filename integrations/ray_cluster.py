"""A Ray cluster of several nodes on this machine, on loopback, for as long as one command runs (tests, benchmarks).

``cluster_command(command, temp_dir, nodes=2)`` is ``unshare --net --pid --fork --kill-child --mount-proc sh -c '...'``:
in fresh network and process namespaces it brings loopback up, starts a head node (``ray start --head --port
P``) and ``nodes - 1`` worker nodes joining it, ``--num-cpus 1`` each, dashboard off, then runs ``command`` with
``RAY_ADDRESS`` set to ``127.0.0.1:P`` and stops the cluster (``ray stop --force``), exiting with the command's
status. From a shell:
``python -m integrations.ray_cluster [--nodes 2] -- tango run ...`` (the workflow's ``execution.engine`` being
``{ray: {address: 'auto'}}``, or the address ``127.0.0.1:6379``).

Why the namespaces: on Linux Ray puts the machine's interface address in place of 127.0.0.1, even with
``--node-ip-address 127.0.0.1``; where loopback is the only interface, every node reports 127.0.0.1 and nothing
listens outside. In its own process namespace ``ray stop`` sees (and stops) this cluster only, never another
Ray on the machine, and when the command ends the kernel ends whatever the cluster left running. Both need
root (or an unprivileged user namespace). Two nodes start and stop in about 10 s on 2 cores. Token
authentication is off (``RAY_AUTH_MODE=disabled``): nothing outside the namespace can reach the cluster, and Ray 2.60
would otherwise turn it on for the head alone whenever a ``~/.ray/auth_token`` exists, which the workers then fail.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

RAY = Path(sys.executable).parent / "ray"  # this environment's: its workers import what it has installed
PORT = 6379
OBJECT_STORE_BYTES = 80 * 2**20  # Ray's least is 75 MiB; each node's store is a shared-memory file


def cluster_script(command: str, temp_dir: Path, nodes: int = 2, cpus_per_node: int = 1, port: int = PORT,
                   ray: Path = RAY) -> str:
    """The ``sh`` script that starts the cluster (its logs under ``temp_dir``), runs ``command`` and stops it."""
    if nodes < 1 or cpus_per_node < 1:
        raise ValueError(f"a cluster needs nodes >= 1 and cpus_per_node >= 1, got {nodes} and {cpus_per_node}")
    common = (f"--num-cpus {cpus_per_node} --num-gpus 0 --object-store-memory {OBJECT_STORE_BYTES} "
              "--node-ip-address 127.0.0.1 --disable-usage-stats")
    log = shlex.quote(str(temp_dir / "start.log"))
    start = [f"{shlex.quote(str(ray))} start --head --port {port} --include-dashboard=false "
             f"--temp-dir {shlex.quote(str(temp_dir))} {common}"]
    start += [f"{shlex.quote(str(ray))} start --address 127.0.0.1:{port} {common}"] * (nodes - 1)
    started = " && ".join(f"{line} >>{log} 2>&1" for line in start)
    return "\n".join([
        "ip link set lo up || exit 1",
        f"export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled RAY_ADDRESS=127.0.0.1:{port}",
        f"if ! ( {started} ); then cat {log} >&2; {shlex.quote(str(ray))} stop --force >/dev/null 2>&1; exit 1; fi",
        command,
        "status=$?",
        f"{shlex.quote(str(ray))} stop --force >/dev/null 2>&1",
        "exit $status",
    ])


def cluster_command(command: str, temp_dir: Path, nodes: int = 2, cpus_per_node: int = 1, port: int = PORT,
                    ray: Path = RAY) -> list[str]:
    """The argv that runs ``command`` (a shell command line) on a fresh cluster of ``nodes`` nodes."""
    script = cluster_script(command, temp_dir, nodes, cpus_per_node, port, ray)
    return ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script]


def run_on_cluster(command: str | Sequence[str], nodes: int = 2, cpus_per_node: int = 1, port: int = PORT,
                   **run: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` of ``command`` (a shell line, or an argv) on a fresh cluster of ``nodes`` nodes, whose
    Ray logs live in a temporary directory removed afterwards (a short path: Ray's socket paths must fit 107
    bytes). ``run``: ``subprocess.run``'s keyword arguments (``cwd``, ``env``, ``capture_output``, ``timeout``)."""
    line = command if isinstance(command, str) else shlex.join(command)
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    try:
        return subprocess.run(cluster_command(line, temp_dir, nodes, cpus_per_node, port), **run)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integrations.ray_cluster",
                                     description="Run a command on a fresh Ray cluster of this machine (loopback).")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command (after --)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return run_on_cluster(command, args.nodes, args.cpus_per_node, args.port).returncode


if __name__ == "__main__":
    sys.exit(main())
