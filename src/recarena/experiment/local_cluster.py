"""A Ray cluster of several nodes on this one machine, to try the Ray executor without a
cluster (and to test it): each node a ``ray start --block`` process of its own, on a
loopback address of its own.

Ray replaces 127.0.0.1 with the machine's own network address, so every node gets another
loopback address (127.0.0.2, 127.0.0.3, ...): nothing leaves the machine. Usage statistics
are off (``RAY_USAGE_STATS_ENABLED=0``, ``--disable-usage-stats``)::

    with local_cluster(log_dir, nodes=2) as address:
        run_experiment(config.with_execution(executor="ray", address=address, ...))

The processes are ended by their process groups when the block ends, also after an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: the head's loopback address and port; node i (from 0) gets 127.0.0.(2 + i)
HEAD_ADDRESS = "127.0.0.2"
HEAD_PORT = 6390


@dataclass
class LocalCluster:
    """A running local cluster: the address a driver joins, its nodes' addresses and the
    ``ray start`` processes."""

    address: str
    node_addresses: list[str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)


def _start(args: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen:
    ray_cli = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [str(ray_cli), "start", *args, "--disable-usage-stats", "--block"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """End a ``ray start --block`` process and its children (its process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def local_cluster(
    log_dir: Path,
    *,
    nodes: int = 2,
    cpus_per_node: int = 1,
    port: int = HEAD_PORT,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Iterator[LocalCluster]:
    """Start a head and ``nodes - 1`` more nodes, wait until all have joined, yield the
    cluster, then stop every process.

    Parameters
    ----------
    log_dir
        Where each node's output goes (``node-0.log`` is the head's).
    nodes, cpus_per_node
        How many nodes, and the CPUs each offers to tasks.
    port
        The head's port on its loopback address.
    env
        Extra environment of the node processes (e.g. a ``PYTHONPATH`` that lets workers
        import a model class defined outside the package).
    timeout
        Seconds to wait for the nodes to join; then an error quotes the last node's log.

    Raises
    ------
    RuntimeError
        A node did not start or join in time, or Ray reports a node outside 127.0.0.0/8.
    """
    import ray

    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    node_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    addresses = [f"127.0.0.{2 + i}" for i in range(nodes)]
    head = addresses[0]
    address = f"{head}:{port}"
    cluster = LocalCluster(address, addresses)
    common = ["--num-cpus", str(cpus_per_node)]
    try:
        log = log_dir / "node-0.log"
        cluster.logs.append(log)
        cluster.processes.append(
            _start(
                [
                    "--head",
                    "--node-ip-address",
                    head,
                    "--port",
                    str(port),
                    "--include-dashboard",
                    "false",
                    *common,
                ],
                log,
                node_env,
            )
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                ray.init(address=address, _node_ip_address=head, logging_level="ERROR")
                break
            except Exception as exc:
                if time.monotonic() > deadline or cluster.processes[0].poll() is not None:
                    raise RuntimeError(
                        f"the Ray head on {address} did not start: {log.read_text()[-2000:]}"
                    ) from exc
                time.sleep(1)
        for i, node in enumerate(addresses[1:], start=1):
            log = log_dir / f"node-{i}.log"
            cluster.logs.append(log)
            cluster.processes.append(
                _start(["--address", address, "--node-ip-address", node, *common], log, node_env)
            )
        while len([n for n in ray.nodes() if n["Alive"]]) < nodes:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{nodes} nodes were asked for; {cluster.logs[-1]}: "
                    f"{cluster.logs[-1].read_text()[-2000:]}"
                )
            time.sleep(1)
        seen = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
        if not all(a.startswith("127.") for a in seen):
            raise RuntimeError(f"Ray reports nodes outside the loopback range: {seen}")
        ray.shutdown()  # the driver of a run connects by itself
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(cluster.processes):
            stop_process(proc)
