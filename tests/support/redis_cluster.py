"""A throwaway Redis Cluster for the tests: real ``redis-server`` nodes, never a mock.

``primaries`` nodes (and ``replicas`` per primary) run in cluster mode on free loopback
ports, each in a directory of its own under one temp dir, configured on their command
lines (no persistence; the cluster bus on a free port of its own, ``cluster-port``);
``redis-cli --cluster create --cluster-yes`` assigns the slots. The cluster is ready
when every node says ``cluster_state:ok``. Every node is stopped by PID on exit.

``url()`` is the ``redis+cluster://host:port,host:port,...`` URL that ``limits`` (and so
``REDIS_URL``) takes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from deploy.processes import free_port
from tests.support.redis import HOST, RedisServer, RedisUnavailable, find_binary

READY_TIMEOUT_S = 30.0


class RedisClusterServers:
    def __init__(self, nodes: list[RedisServer], primaries: int) -> None:
        self.nodes = nodes
        self.primaries = primaries

    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.nodes[: self.primaries])
        return f"redis+cluster://{hosts}"

    def client(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(HOST, node.port) for node in self.nodes],
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )

    def keys_per_node(self) -> dict[int, int]:
        """Port -> number of keys held, for every node (replicas hold their primary's)."""
        counts = {}
        for node in self.nodes:
            with node.client() as conn:
                counts[node.port] = int(conn.dbsize())
        return counts

    def list_entries(self) -> int:
        """Entries of every list on every primary: a moving window holds one per hit."""
        total = 0
        for node in self.nodes:
            with node.client() as conn:
                if conn.info("replication").get("role") != "master":
                    continue
                for key in conn.scan_iter():
                    if conn.type(key) == b"list":
                        total += int(conn.llen(key))
        return total

    def ready(self) -> bool:
        for node in self.nodes:
            try:
                with node.client() as conn:
                    info = conn.cluster("INFO")  # parsed into a dict by redis-py
            except redis.RedisError:
                return False
            if info.get("cluster_state") != "ok":
                return False
            if str(info.get("cluster_slots_assigned")) != "16384":
                return False
        return True


def _node(binary: Path, root: Path) -> RedisServer:
    port, bus = free_port(), free_port()
    directory = root / str(port)
    directory.mkdir()
    extra = [
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        str(bus),
        "--cluster-config-file",
        str(directory / "nodes.conf"),
        "--cluster-node-timeout",
        "2000",
    ]
    return RedisServer(binary, directory, port, extra)


def _create(binary: Path, nodes: list[RedisServer], replicas: int) -> None:
    cli = binary.with_name("redis-cli")
    if not cli.exists():
        found = shutil.which("redis-cli")
        if found is None:
            raise RedisUnavailable("redis-cli not found (it comes with redis-server)")
        cli = Path(found)
    command = [str(cli), "--cluster", "create"]
    command += [f"{HOST}:{node.port}" for node in nodes]
    command += ["--cluster-replicas", str(replicas), "--cluster-yes"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RedisUnavailable(
            f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
        )


@contextlib.contextmanager
def running_redis_cluster(primaries: int = 3, replicas: int = 0) -> Iterator[RedisClusterServers]:
    """A ready cluster of ``primaries`` (each with ``replicas``); stopped by PID on exit."""
    binary = find_binary()
    root = Path(tempfile.mkdtemp(prefix="housing-redis-cluster-"))
    nodes: list[RedisServer] = []
    try:
        for _ in range(primaries * (1 + replicas)):
            for _attempt in range(3):  # a port may be taken between probe and bind
                node = _node(binary, root)
                try:
                    node.start()
                except RedisUnavailable:
                    if "Address already in use" in node.log:
                        shutil.rmtree(node.root, ignore_errors=True)
                        continue
                    raise
                break
            else:
                raise RedisUnavailable(f"a cluster node could not bind a port:\n{node.log}")
            nodes.append(node)
        _create(binary, nodes, replicas)
        cluster = RedisClusterServers(nodes, primaries)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not cluster.ready():
            if time.monotonic() > deadline:
                raise RedisUnavailable("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield cluster
    finally:
        for node in nodes:  # all at once, then wait for each (stop() signals again: harmless)
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.process.pid, signal.SIGTERM)
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
